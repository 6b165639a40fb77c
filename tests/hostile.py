"""Hostile inputs and the process measurements that go with them, shared by the hostile-client tests and
``bench/bench_hostile.py``.

Importable (not a conftest): ``from hostile import worst_case_body, ProcessTreeSampler, ...``.

* The images of issue 10: a 6000x6000 palette PNG that costs ~50 KB compressed and 36-108 MB decoded
  (:func:`palette_png`), a JPEG whose header says 6000x6000 over a 16x16 image's scan
  (:func:`corrupt_header_jpeg`), and a valid progressive 6000x6000 JPEG with thousands of copies of one
  small scan appended (:func:`scan_flood_jpeg`, ~441 KB).
* :func:`worst_case_body`: one request carrying 14 of the palette PNGs (what the issue calls the worst
  case: every admitted job holding 14 of them).
* :class:`ProcessTreeSampler`: peak memory (``VmHWM``) and CPU seconds of a server and of every process
  under it (the reference decoder's forkserver and workers), sampled from ``/proc`` in a thread so that
  a worker that exits before the end still counts.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from references_support import jpeg_with_size, noise
from references_support import scan_flood_jpeg as _scan_flood_jpeg
from refserver import data_uri
from support import MODEL

__all__ = [
    "ProcessTreeSampler",
    "corrupt_header_jpeg",
    "cpu_seconds",
    "descendants",
    "palette_png",
    "proc_kib",
    "scan_flood_jpeg",
    "worst_case_body",
]

SIDE = 6000
WORST_CASE_REFERENCES = 14  # the most references a Seedream 4.0 request may carry


@functools.cache
def palette_png(side: int = SIDE, colours: int = 4) -> bytes:
    """A ``side`` x ``side`` palette PNG of ``colours`` flat horizontal bands: cheap to send (~50 KB at
    6000x6000), 36 MB as palette indices and 108 MB as RGB once decoded."""
    image = Image.new("P", (side, side), 0)
    image.putpalette([value for i in range(256) for value in (i, 255 - i, (90 + 37 * i) % 256)])
    band = -(-side // colours)
    for i in range(1, colours):
        image.paste(i * 255 // (colours - 1), (0, i * band, side, min(side, (i + 1) * band)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", bits=8)  # 8 bits per index (optimize would pack 4 colours in 2 bits)
    return buffer.getvalue()


@functools.cache
def corrupt_header_jpeg(side: int = SIDE) -> bytes:
    """A 16x16 baseline JPEG whose frame header (SOF) was patched to claim ``side`` x ``side``: Pillow
    would decode it as a full-size grey image without a word."""
    return jpeg_with_size(noise((16, 16), "jpeg"), side, side)


@functools.cache
def scan_flood_jpeg(side: int = SIDE, copies: int = 3000) -> bytes:
    """A valid progressive ``side`` x ``side`` JPEG with ``copies`` extra copies of its last scan."""
    return _scan_flood_jpeg(side, copies)


def worst_case_body(**fields: Any) -> dict[str, Any]:
    """A 1K request with 14 distinct-looking 6000x6000 palette PNGs as data URIs (~0.9 MB of JSON)."""
    uris = [data_uri(palette_png(SIDE, 2 + i % 5), "png") for i in range(WORST_CASE_REFERENCES)]
    base = {"model": MODEL, "prompt": "a cat in the style of these", "size": "1K", "response_format": "url"}
    return {**base, "image": uris, **fields}


# -- /proc ---------------------------------------------------------------------------------------


def proc_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (``VmHWM``, ``VmRSS``), in KiB; 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU seconds of a process (``children``: plus those of its reaped children)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (children, grandchildren, ...), from the parent ids in ``/proc``."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class ProcessTreeSampler:
    """Samples a process and its descendants every ``interval`` seconds in a thread.

    ``peak_kib``: the largest sum, over one sample's live processes, of their ``VmHWM`` (an upper bound of
    what they held at once, as each may have peaked at another moment; decoder workers killed at the time
    budget and replaced are not added up, as they never lived together); ``peak_rss_kib``: the largest sum
    of ``VmRSS`` seen in one sample (what the tree held at once, as sampled); ``cpu_s``: CPU seconds of the
    tree since :meth:`start`, processes that exited included (their last sample).
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.hwm: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.peak_rss_kib = 0
        self.peak_kib = 0
        self._cpu_before: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="process-tree-sampler", daemon=True)

    def sample(self) -> None:
        rss = live_hwm = 0
        for pid in (self.pid, *descendants(self.pid)):
            hwm = proc_kib(pid, "VmHWM")
            if hwm:
                self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
                self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu_seconds(pid))
                rss += proc_kib(pid, "VmRSS")
                live_hwm += hwm
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_kib = max(self.peak_kib, live_hwm)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> ProcessTreeSampler:
        self.sample()
        self._cpu_before = dict(self.cpu)
        self._thread.start()
        return self

    def stop(self) -> ProcessTreeSampler:
        self._stop.set()
        self._thread.join()
        self.sample()
        return self

    @property
    def server_peak_kib(self) -> int:
        return self.hwm.get(self.pid, 0)

    @property
    def cpu_s(self) -> float:
        return sum(cpu - self._cpu_before.get(pid, 0.0) for pid, cpu in self.cpu.items())

    @property
    def processes(self) -> int:
        return len(self.hwm)
