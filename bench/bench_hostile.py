"""Hostile clients (issue 10): memory and CPU under the worst-case reference load, a normal request's time
while hostile clients hold connections, and the cost of refusing a scan-flood JPEG. Prints figures and
ratios measured side by side in one run; never pass/fail (the bounds are tests/test_memory_bound.py's).

Run: ``.venv/bin/python bench/bench_hostile.py`` (a few minutes on 2 cores; ``--parts a,b,c`` for some).
Each part starts its own real ``seedream serve --no-auth`` subprocess (preview engine, loopback port,
temp data dir) and measures the server together with every process under it (the reference decoder's
forkserver and workers) from ``/proc``:

a. **Worst-case reference load**: every place of the default queue (``--max-concurrency 2``,
   ``--max-queue 16``) taken at once by a 1K request with 14 references that are 6000x6000 palette PNGs
   (~0.65 MB of PNG per request), default settings otherwise (``--max-decoded-megapixels``,
   ``--reference-decode-timeout-s``). Peak memory: the largest sum, over the processes alive at one
   sample (every 50 ms), of their ``VmHWM`` (each at its own peak at once: an upper bound; workers
   killed at the time budget and replaced are not added up), and the largest sum of their ``VmRSS``;
   CPU seconds of the tree; outcomes (200 / 429 ``ServerOverloaded``, or anything else).
b. **A normal 1K request among hostile clients**: its time on an idle server (median); with N connections
   dribbling header bytes (one byte per second each); and with two streaming clients that never read
   (4K group, ``b64_json``: large events) holding both engine slots, plus the dribblers. The non-readers
   are cut off after ``--stream-send-timeout-s``, set to 5 s here (default 30 s) so the run stays short:
   the third figure is about that long by design, plus the time the non-readers' socket buffers take to
   fill. ``--http-read-timeout-s`` is 10 s here (default 30 s), and the part waits until the server has
   closed every dribbling connection.
c. **Scan-flood progressive JPEG** (valid 6000x6000 progressive JPEG with 3000 copies of one small scan
   appended): time to the 400 and CPU seconds the server tree spent, one per request and 14 in one
   body, next to an honest 6000x6000 progressive JPEG of the same picture decoded and used (a 200).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import LiveServer, start_server, stop_server
from hostile import (
    WORST_CASE_REFERENCES,
    ProcessTreeSampler,
    palette_png,
    proc_kib,
    scan_flood_jpeg,
    worst_case_body,
)
from refserver import data_uri, encode
from seedream_server.accounts import AccountStore
from support import GENERATIONS, body, served_metric, wait_until

T = TypeVar("T")
MIB = 1024
GOAL_MIB = 1.5 * 1024  # the goal for the worst-case load
BEFORE_MIB = 4.1 * 1024  # what the issue measured before the fix
NORMAL = body(size="1K", response_format="url")
NON_READER = body(
    size="4K",
    prompt="生成15张猫的图片",
    sequential_image_generation="auto",
    sequential_image_generation_options={"max_images": 15},
    response_format="b64_json",
    stream=True,
)
SOS = b"\xff\xda"  # JPEG start-of-scan marker
PHASE_LIMIT_S = 600  # every wait below is bounded by this


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown CPU",
    )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{now}; nproc {os.cpu_count()}; {model}; Python {platform.python_version()}; load average {load}"


def serve(tmp: Path, *options: str) -> LiveServer:
    """A real ``seedream serve --no-auth`` in a fresh directory under ``tmp``."""
    tmp.mkdir()
    return start_server(tmp, "--no-auth", "--log-level", "warning", *options)


def mib(kib: float) -> str:
    return f"{kib / MIB:.0f} MiB"


async def timed(work: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await work()
    return result, time.perf_counter() - started


def code_of(response: httpx.Response) -> str:
    if response.status_code == 200:
        return "200"
    try:
        return f"{response.status_code} {response.json()['error']['code']}"
    except (ValueError, KeyError):
        return str(response.status_code)


# -- a. worst-case reference load ------------------------------------------------------------------


async def part_a(tmp: Path, decode_timeout: float | None) -> None:
    options = [] if decode_timeout is None else ["--reference-decode-timeout-s", str(decode_timeout)]
    print(f"\n## a. worst-case reference load (18 requests x 14 palette PNGs of 6000x6000; {options or 'defaults'})")
    server = serve(tmp / "a", *options)
    try:
        request = worst_case_body()
        png_bytes = sum(len(palette_png(6000, 2 + i % 5)) for i in range(WORST_CASE_REFERENCES))
        idle = ProcessTreeSampler(server.process.pid)
        idle.sample()
        idle_rss = idle.peak_rss_kib
        sampler = ProcessTreeSampler(server.process.pid).start()
        async with httpx.AsyncClient(base_url=server.url, timeout=PHASE_LIMIT_S) as client:
            responses, wall = await timed(
                lambda: asyncio.gather(*(client.post(GENERATIONS, json=request) for _ in range(18)))
            )
        sampler.stop()
        outcomes = Counter(code_of(r) for r in responses)
        for response in {code_of(r): r for r in responses if r.status_code != 200}.values():
            print(f"  e.g. {code_of(response)}: {response.json()['error']['message']}")
        print(f"PNG per request: {png_bytes / 1e6:.2f} MB; wall {wall:.1f} s; outcomes: {dict(outcomes)}")
        print(f"processes seen: {sampler.processes} (server, decoder forkserver and workers)")
        print(f"idle tree RSS before the load: {mib(idle_rss)}")
        print(
            f"peak, VmHWM of live processes:    {mib(sampler.peak_kib)}  (server alone {mib(sampler.server_peak_kib)})"
        )
        print(f"peak, sampled sum of VmRSS:       {mib(sampler.peak_rss_kib)}")
        print(f"server VmRSS after the load:      {mib(proc_kib(server.process.pid, 'VmRSS'))}")
        print(
            f"CPU seconds of the tree:          {sampler.cpu_s:.1f} s "
            f"({sampler.cpu_s / wall:.2f} cores over the wall time)"
        )
        print(
            f"ratios: peak / goal 1.5 GB = {sampler.peak_kib / GOAL_MIB / MIB:.2f}; "
            f"peak / before (4.1 GB) = {sampler.peak_kib / BEFORE_MIB / MIB:.2f}"
        )
    finally:
        stop_server(server)


# -- b. a normal request among hostile clients --------------------------------------------------------


class Dribbler:
    """Connections that send a request line and then one header byte per second, never finishing."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.cut_after: list[float] = []  # seconds from connect to the server closing the connection
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        started = time.perf_counter()
        try:
            writer.write(b"POST /api/v3/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()
            while time.perf_counter() - started < PHASE_LIMIT_S:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        if await reader.read(1024) == b"":
                            self.cut_after.append(time.perf_counter() - started)
                            return
                writer.write(b"a")
                await writer.drain()
        except ConnectionError:
            self.cut_after.append(time.perf_counter() - started)
        finally:
            writer.close()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._one()) for _ in range(self.count)]

    async def cut_off(self, limit: float) -> None:
        """Wait (at most ``limit`` seconds) until the server has closed every connection."""
        await asyncio.wait(self._tasks, timeout=limit)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def non_reader(port: int) -> socket.socket:
    """A streaming request whose client never reads a byte of the response (a small receive buffer)."""
    import json

    payload = json.dumps(NON_READER).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    head = (
        f"POST {GENERATIONS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


async def normal_times(client: httpx.AsyncClient, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        response, seconds = await timed(lambda: client.post(GENERATIONS, json=NORMAL))
        assert response.status_code == 200, response.text
        times.append(seconds)
    return times


async def part_b(tmp: Path, dribblers: int, send_timeout: float, read_timeout: float, repeat: int) -> None:
    print(
        f"\n## b. a normal 1K request among hostile clients ({dribblers} header dribblers; 2 non-reading 4K "
        f"streams; --stream-send-timeout-s {send_timeout:g}, --http-read-timeout-s {read_timeout:g})"
    )
    server = serve(tmp / "b", "--stream-send-timeout-s", str(send_timeout), "--http-read-timeout-s", str(read_timeout))
    port = int(server.url.rsplit(":", 1)[1])
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=PHASE_LIMIT_S) as client:
            await normal_times(client, 1)  # warm-up
            idle = statistics.median(await normal_times(client, repeat))
            slow = Dribbler(port, dribblers)
            slow.start()
            await asyncio.sleep(1)
            among_dribblers = statistics.median(await normal_times(client, repeat))
            sockets = [non_reader(port), non_reader(port)]
            try:
                both = await asyncio.to_thread(
                    wait_until,
                    lambda: served_metric(server.url, "seedream_inflight_requests") >= 2,
                    "both non-readers hold a slot",
                    PHASE_LIMIT_S,
                )
                assert both
                held = time.perf_counter()
                (blocked,) = await normal_times(client, 1)
                since_held = time.perf_counter() - held
                after = statistics.median(await normal_times(client, repeat))
            finally:
                for sock in sockets:
                    sock.close()
            await slow.cut_off(read_timeout + 30)
            await slow.stop()
        rows = await asyncio.to_thread(_rows, server.data_dir)
        non_readers = [row for row in rows if row.status != "ok"]  # every other request of this part succeeds
        print(f"idle server, median of {repeat}:                      {idle * 1000:7.0f} ms")
        print(
            f"with {dribblers} dribblers, median of {repeat}:             {among_dribblers * 1000:7.0f} ms  "
            f"ratio {among_dribblers / idle:.2f}"
        )
        print(
            f"with 2 non-readers holding both slots + dribblers:  {blocked * 1000:7.0f} ms  ratio {blocked / idle:.1f} "
            f"(sent once both held a slot; answered {since_held:.1f} s later)"
        )
        print(
            f"after the non-readers were cut off, median of {repeat}: {after * 1000:7.0f} ms  ratio {after / idle:.2f}"
        )
        print(f"non-readers' ledger rows: {[(row.status, row.images, row.duration_ms) for row in non_readers]}")
        cut = sorted(slow.cut_after)
        if cut:
            print(
                f"dribblers closed by the server: {len(cut)} of {dribblers}, after {cut[0]:.1f}-{cut[-1]:.1f} s "
                f"(--http-read-timeout-s {read_timeout:g}, from each connection's start)"
            )
        else:
            print(f"dribblers closed by the server: 0 of {dribblers}")
    finally:
        stop_server(server)


def _rows(data_dir: Path) -> list[Any]:
    store = AccountStore.open(data_dir)
    try:
        return store.usage_records()
    finally:
        store.close()


# -- c. scan-flood JPEG ----------------------------------------------------------------------------------


async def refused_cost(server: LiveServer, images: list[str], repeat: int) -> tuple[float, float, str]:
    """Median time to the answer and median CPU seconds of the server tree, and the answer's code."""
    times, cpus, codes = [], [], set()
    async with httpx.AsyncClient(base_url=server.url, timeout=PHASE_LIMIT_S) as client:
        for _ in range(repeat):
            sampler = ProcessTreeSampler(server.process.pid).start()
            response, seconds = await timed(lambda: client.post(GENERATIONS, json=body(size="1K", image=images)))
            await asyncio.sleep(0.2)  # let the tree's CPU counters settle
            sampler.stop()
            times.append(seconds)
            cpus.append(sampler.cpu_s)
            codes.add(code_of(response))
    return statistics.median(times), statistics.median(cpus), ", ".join(sorted(codes))


async def part_c(tmp: Path, repeat: int) -> None:
    flood = scan_flood_jpeg()
    honest = encode(Image.new("RGB", (6000, 6000), (90, 140, 200)), "jpeg", progressive=True, quality=80)
    scans = flood.count(SOS), honest.count(SOS)  # the flood is this image with 3000 scans appended
    print(
        f"\n## c. scan-flood progressive JPEG ({len(flood) / 1000:.0f} KB, {scans[0]} scans) "
        f"vs the honest one ({len(honest) / 1000:.0f} KB, {scans[1]} scans)"
    )
    server = serve(tmp / "c")
    try:
        one = [data_uri(flood, "jpeg")]
        await refused_cost(server, one, 1)  # warm-up (starts the decoder's workers)
        await refused_cost(server, [data_uri(honest, "jpeg")], 1)
        flood_s, flood_cpu, flood_code = await refused_cost(server, one, repeat)
        many_s, many_cpu, many_code = await refused_cost(server, one * WORST_CASE_REFERENCES, repeat)
        honest_s, honest_cpu, honest_code = await refused_cost(server, [data_uri(honest, "jpeg")], repeat)
        print(f"{'reference':<34} {'answer':<26} {'time':>8} {'CPU (tree)':>11}")
        print(f"{'1 scan flood':<34} {flood_code:<26} {flood_s * 1000:6.0f} ms {flood_cpu:9.2f} s")
        print(f"{'14 scan floods in one body':<34} {many_code:<26} {many_s * 1000:6.0f} ms {many_cpu:9.2f} s")
        print(f"{'1 honest 6000x6000 progressive':<34} {honest_code:<26} {honest_s * 1000:6.0f} ms {honest_cpu:9.2f} s")
        print(
            f"ratios: flood / honest time = {flood_s / honest_s:.2f}; before the fix one flood took 12.7 s "
            f"to decode (ratio now {flood_s / 12.7:.3f})"
        )
    finally:
        stop_server(server)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parts", default="a,b,c", help="which parts to run (comma-separated)")
    parser.add_argument("--dribblers", type=int, default=200)
    parser.add_argument("--send-timeout", type=float, default=5.0, help="--stream-send-timeout-s for part b")
    parser.add_argument("--read-timeout", type=float, default=10.0, help="--http-read-timeout-s for part b")
    parser.add_argument("--decode-timeout", type=float, help="--reference-decode-timeout-s for part a")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"# bench_hostile: {machine()}")
    with tempfile.TemporaryDirectory(prefix="seedream-bench-") as name:
        tmp = Path(name)
        if "a" in parts:
            await part_a(tmp, args.decode_timeout)
        if "b" in parts:
            await part_b(tmp, args.dribblers, args.send_timeout, args.read_timeout, args.repeat)
        if "c" in parts:
            await part_c(tmp, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
