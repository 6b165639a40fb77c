"""Group generation: time to first and to last image for groups of 1, 4 and 15 at 2K, streaming vs not.

Runs a real ``seedream serve --no-auth`` subprocess on a loopback port (preview engine) and prints a
table. Bounded: REPEATS runs per row. Usage: ``.venv/bin/python bench/bench_groups.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import start_server, stop_server

MODEL = "doubao-seedream-4-0-250828"
REPEATS = 2
GROUPS = (1, 4, 15)


def payload(count: int, stream: bool) -> dict[str, object]:
    prompt = "a lighthouse at dusk" if count == 1 else f"a series of {count} pictures of a lighthouse at dusk"
    return {
        "model": MODEL,
        "prompt": prompt,
        "size": "2K",
        "response_format": "url",
        "seed": 1,
        "sequential_image_generation": "auto",
        "stream": stream,
    }


def streamed(url: str, count: int) -> tuple[float, float]:
    start = time.perf_counter()
    first = last = 0.0
    seen = 0
    with httpx.stream("POST", url, json=payload(count, True), timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("event: image_generation.partial_succeeded"):
                seen += 1
                last = time.perf_counter() - start
                first = first or last
    assert seen == count, (seen, count)
    return first, last


def whole(url: str, count: int) -> float:
    start = time.perf_counter()
    r = httpx.post(url, json=payload(count, False), timeout=600)
    r.raise_for_status()
    assert len(r.json()["data"]) == count
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), "--no-auth", "--log-level", "warning")
        url = f"{server.url}/api/v3/images/generations"
        try:
            whole(url, 1)  # warm-up
            print(f"{'images':>6} | {'stream first':>12} | {'stream last':>11} | {'json (all)':>10} | first/json")
            for count in GROUPS:
                runs = [streamed(url, count) for _ in range(REPEATS)]
                first = statistics.median(r[0] for r in runs)
                last = statistics.median(r[1] for r in runs)
                total = statistics.median(whole(url, count) for _ in range(REPEATS))
                print(f"{count:>6} | {first:>11.3f}s | {last:>10.3f}s | {total:>9.3f}s | {first / total:>9.2f}")
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
