"""Bounded load run against a real server: API keys on, a queue of 16, far more clients than capacity.

Run: ``.venv/bin/python bench/bench_load.py`` (about a minute; loopback traffic only, stops by itself).

1. Creates an API key (limit high enough not to interfere) in a temp data dir and starts
   ``seedream serve`` as a subprocess (preview engine, ``--max-concurrency 2 --max-queue 16``).
2. Sends 500 generation requests (1280x720, ``url`` responses) from 64 concurrent clients that do not
   retry, and counts: accepted (200), rejected with 429 (by code), errors (anything else: must be 0).
3. Prints p50/p99 latency of accepted and of rejected requests as the clients saw them (on a 2-core
   machine the 64 clients share the CPU with the server), the same from the server's usage ledger
   (``duration_ms``: from the start of preparing the request to its end), throughput, and the server's
   peak RSS (``VmHWM`` from ``/proc/PID/status``), then stops the server with SIGTERM.

Options: ``--requests N --concurrency N --max-queue N --max-concurrency N --size WxH --no-auth``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from seedream_server.accounts import AccountStore

MODEL = "doubao-seedream-4-0-250828"
TIME_LIMIT_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


async def load(url: str, key: str, args: argparse.Namespace) -> tuple[list[tuple[int, str, float]], float]:
    """(status, code, seconds) per request, and the wall time."""
    results: list[tuple[int, str, float]] = []
    gate = asyncio.Semaphore(args.concurrency)
    # drop idle connections before uvicorn does (its keep-alive timeout is 5 s, httpx's default expiry too):
    # otherwise a request sent on a connection the server is just closing fails with a ReadError
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency, keepalive_expiry=2.0
    )
    headers = {"Authorization": f"Bearer {key}"}

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=headers) as client:

        async def one(i: int) -> None:
            payload = {"model": MODEL, "prompt": f"a lighthouse at dusk, variant {i}", "size": args.size, "seed": i}
            async with gate:
                started = time.perf_counter()
                try:
                    r = await client.post("/api/v3/images/generations", json=payload)
                    code = "" if r.status_code == 200 else r.json().get("error", {}).get("code", "?")
                    results.append((r.status_code, code, time.perf_counter() - started))
                except httpx.HTTPError as exc:
                    results.append((0, type(exc).__name__, time.perf_counter() - started))

        started = time.perf_counter()
        async with asyncio.timeout(TIME_LIMIT_S):
            await asyncio.gather(*(one(i) for i in range(args.requests)))
        return results, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--max-concurrency", type=int, default=2)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--no-auth", action="store_true", help="serve with --no-auth (to compare the cost of keys)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="seedream-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        store = AccountStore.open(data_dir)
        key = store.create_key("bench", ipm=10_000_000)[1]
        store.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "seedream_server.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
        cmd += ["--max-queue", str(args.max_queue), "--max-concurrency", str(args.max_concurrency)]
        cmd += ["--log-level", "warning"] + (["--no-auth"] if args.no_auth else [])
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDREAM_")}
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text(), file=sys.stderr)
                    return 1
                try:
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            rss_idle = proc_status(server.pid, "VmRSS")
            cpu_before = cpu_seconds(server.pid)
            client_before = resource.getrusage(resource.RUSAGE_SELF)
            results, wall = asyncio.run(load(url, key, args))
            client_after = resource.getrusage(resource.RUSAGE_SELF)
            server_cpu = cpu_seconds(server.pid) - cpu_before
            peak = proc_status(server.pid, "VmHWM")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        server_log = log_path.read_text(errors="replace")
        store = AccountStore.open(data_dir)  # the server's own view: the usage ledger, written on shutdown
        ledger = store.usage_records()
        store.close()

    accepted = [s for status, _, s in results if status == 200]
    rejected = [s for status, _, s in results if status == 429]
    reasons = Counter(code for status, code, _ in results if status == 429)
    errors = Counter(f"{status} {code}" for status, code, _ in results if status not in (200, 429))
    ms = 1000.0
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; Python {platform.python_version()}, {platform.system()}")
    print(
        f"load: {args.requests} requests of {args.size} from {args.concurrency} concurrent clients (no retries); "
        f"server --max-concurrency {args.max_concurrency} --max-queue {args.max_queue}, "
        + ("--no-auth" if args.no_auth else "API key on")
    )
    print(f"wall time: {wall:.1f} s; accepted images/s: {len(accepted) / wall:.1f}")
    print(f"accepted (200): {len(accepted)}")
    print(f"rejected with 429: {len(rejected)} ({', '.join(f'{c} {n}' for c, n in reasons.items()) or '-'})")
    detail = ", ".join(f"{c} x{n}" for c, n in errors.items())
    print(f"errors: {sum(errors.values())}" + (f" ({detail})" if detail else ""))
    print(
        f"latency accepted: p50 {percentile(accepted, 0.5) * ms:.0f} ms, p99 {percentile(accepted, 0.99) * ms:.0f} ms, "
        f"mean {statistics.fmean(accepted) * ms if accepted else float('nan'):.0f} ms"
    )
    p50, p99 = percentile(rejected, 0.5) * ms, percentile(rejected, 0.99) * ms
    print(f"latency rejected: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    served_ok = [r.duration_ms / ms for r in ledger if r.status == "ok"]
    served_429 = [r.duration_ms / ms for r in ledger if r.status in reasons]
    print(
        f"server-side (ledger) duration: accepted p50 {percentile(served_ok, 0.5) * ms:.0f} ms, "
        f"p99 {percentile(served_ok, 0.99) * ms:.0f} ms; rejected p50 {percentile(served_429, 0.5) * ms:.0f} ms, "
        f"p99 {percentile(served_429, 0.99) * ms:.0f} ms; ledger rows {len(ledger)}"
    )
    client_cpu = (client_after.ru_utime - client_before.ru_utime) + (client_after.ru_stime - client_before.ru_stime)
    print(f"CPU during the run: server {server_cpu:.1f} s, clients {client_cpu:.1f} s (of {wall * os.cpu_count():.1f})")  # type: ignore[operator]
    print(f"server RSS: {rss_idle / 2**20:.0f} MiB idle, {peak / 2**20:.0f} MiB peak (VmHWM)")
    if errors:
        print("server log:\n" + server_log[-5000:])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
