"""Graceful shutdown: seconds from SIGTERM to process exit while a long group is in flight, against the
configured ``--shutdown-timeout-s`` (a ratio below 1 means the group ended before the timeout did).

The pass/fail test (tests/test_backpressure.py) only shows that the job was cut off; how long the
server took to leave is a figure, printed here. Runs a real ``seedream serve --no-auth`` subprocess on
a loopback port (preview engine) per row. Usage: ``.venv/bin/python bench/bench_shutdown.py``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import start_server, stop_server
from support import GENERATIONS, body, served_metric, wait_until

TIMEOUTS = (1, 3, 5)
ENDLESS = body(size="4K", sequential_image_generation="auto", prompt="生成15张猫的图片", response_format="url")


def exit_seconds(shutdown_timeout: int) -> float:
    with tempfile.TemporaryDirectory(prefix="seedream-bench-") as tmp:
        server = start_server(
            Path(tmp), "--no-auth", "--max-concurrency", "1", "--shutdown-timeout-s", str(shutdown_timeout)
        )

        def call() -> None:
            with contextlib.suppress(httpx.TransportError):  # cut off by the shutdown: expected
                httpx.post(server.url + GENERATIONS, json=ENDLESS, timeout=600)

        thread = threading.Thread(target=call)
        thread.start()
        try:
            wait_until(lambda: served_metric(server.url, "seedream_inflight_requests") >= 1, "the group started")
            start = time.perf_counter()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=600)
            return time.perf_counter() - start
        finally:
            if server.process.poll() is None:
                stop_server(server)
            thread.join(timeout=600)


def main() -> None:
    print(f"{'shutdown-timeout-s':>18} {'SIGTERM to exit (s)':>20} {'ratio':>7}")
    for timeout in TIMEOUTS:
        seconds = exit_seconds(timeout)
        print(f"{timeout:>18} {seconds:>20.2f} {seconds / timeout:>7.2f}")


if __name__ == "__main__":
    main()
