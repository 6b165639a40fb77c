"""Benchmark: the diffusers engine on a tiny SDXL pipeline at real size (1024x1024, 4 steps).

Run: ``.venv/bin/python bench/bench_diffusers.py [--repeat 5] [--rounds 2]`` (a few minutes on 2 CPU
cores; loopback traffic only; needs the ``diffusers`` extra).

A tiny random-weight SDXL pipeline (``tests/tiny_pipelines.py``) is saved to a temp dir and served by
real ``seedream serve --config`` subprocesses on free loopback ports, with ``native_pixels = 1048576``
so that it draws at 1024x1024, and ``steps = 4``. The script measures:

* **latency**: the median over ``--repeat`` requests (after a warm-up) of one ``b64_json`` request for
  ``1024x1024`` (watermark on: the default), timed until the JSON body is read, next to the median of
  the bare pipeline call in this process (on a worker thread, like the server's) at the same size,
  steps and seed. Bare calls and requests alternate, so drift on a shared machine hits both alike,
  with a 0.5 s pause between them (the other process's OpenMP threads spin for a while after their
  last call and would steal the 2 cores). The ratio request / bare call is what the server adds:
  hand-off to the worker thread, watermark, JPEG encode, base64, JSON and HTTP. It is measured on two
  servers: ``max_batch_size = 1`` (no batching) and ``8`` (a lone request also waits out the batch
  window, 10 ms by default). The server's own split, from its ``/metrics`` histograms, is printed next
  to it: the encode stage (resize, watermark, encode) and the whole job less the generate stage.
* **throughput**: 8 concurrent single-image requests, wall time from the first send to the last
  answer, best of ``--rounds``, on the same two servers ([server] ``max_concurrency = 8`` on both, so
  the only difference is dynamic batching).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import LiveServer, start_server, stop_server  # noqa: E402

PROMPT = "a lighthouse on a cliff at dawn, volumetric light"
SIZE = 1024
STEPS = 4
GEN = "/api/v3/images/generations"
SETTLE_S = 0.5


def write_config(path: Path, model_dir: Path, max_batch_size: int) -> Path:
    path.write_text(
        "\n".join(
            [
                "[server]",
                "max_concurrency = 8",
                "",
                "[[models]]",
                'name = "tiny-sdxl"',
                'engine = "diffusers"',
                f"source = {json.dumps(str(model_dir))}",
                f"steps = {STEPS}",
                f"native_pixels = {SIZE * SIZE}",
                f"max_batch_size = {max_batch_size}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


def request(server: LiveServer, seed: int) -> float:
    body = {
        "model": "tiny-sdxl",
        "prompt": PROMPT,
        "size": f"{SIZE}x{SIZE}",
        "response_format": "b64_json",
        "seed": seed,
    }
    started = time.perf_counter()
    response = httpx.post(server.url + GEN, json=body, timeout=600)
    response.raise_for_status()
    data = response.json()["data"][0]
    assert data["size"] == f"{SIZE}x{SIZE}" and data["b64_json"], data
    return time.perf_counter() - started


def bare_call(pipe: Any, seed: int) -> float:
    import torch

    started = time.perf_counter()
    generator = torch.Generator("cpu").manual_seed(seed)
    image = pipe(prompt=PROMPT, height=SIZE, width=SIZE, num_inference_steps=STEPS, generator=generator).images[0]
    assert image.size == (SIZE, SIZE)
    return time.perf_counter() - started


def settle() -> None:
    """Let the other process's OpenMP threads stop spinning before timing this one (2 shared cores)."""
    time.sleep(SETTLE_S)


def latency(server: LiveServer, pipe: Any, repeat: int) -> tuple[float, float]:
    """Median seconds of (bare call, request), alternating, after one warm-up of each.

    The bare call runs on a worker thread, as the server's calls do (on this machine the same work is
    measurably slower on the main thread: glibc's main malloc arena with large tensors).
    """
    with ThreadPoolExecutor(max_workers=1) as worker:

        def bare_on_worker(seed: int) -> float:
            return worker.submit(bare_call, pipe, seed).result()

        bare_on_worker(0)
        settle()
        request(server, 0)
        bare, http = [], []
        for i in range(repeat):
            settle()
            bare.append(bare_on_worker(i + 1))
            settle()
            http.append(request(server, i + 1))
    return statistics.median(bare), statistics.median(http)


def server_stages(server: LiveServer) -> dict[str, float]:
    """Mean seconds of the server's own stages (generate, encode per image; request per job), from /metrics."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    pattern = re.compile(r'seedream_(stage|request)_seconds_(sum|count)\{(?:stage|model)="([^"]+)"\} (\S+)')
    for line in httpx.get(server.url + "/metrics", timeout=30).text.splitlines():
        match = pattern.match(line)
        if match:
            kind, what, label, value = match.groups()
            name = label if kind == "stage" else "request"
            (sums if what == "sum" else counts)[name] = float(value)
    return {name: sums[name] / counts[name] for name in sums if counts.get(name)}


def throughput(server: LiveServer, requests: int, rounds: int) -> float:
    """Best wall time in seconds of ``requests`` concurrent single-image requests."""
    best = float("inf")
    with ThreadPoolExecutor(max_workers=requests) as pool:
        for r in range(rounds):
            started = time.perf_counter()
            seeds = [1000 * (r + 1) + i for i in range(requests)]
            list(pool.map(lambda seed: request(server, seed), seeds))
            best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="timed requests (and bare calls) per server")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of concurrent requests per server")
    parser.add_argument("--requests", type=int, default=8, help="concurrent requests per round")
    args = parser.parse_args()
    args.repeat = max(1, min(args.repeat, 50))
    args.rounds = max(1, min(args.rounds, 10))
    args.requests = max(1, min(args.requests, 32))

    import diffusers
    import torch

    import tiny_pipelines

    with tempfile.TemporaryDirectory(prefix="bench-diffusers-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = tiny_pipelines.build_sdxl(tmp / "tiny-sdxl")
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(model_dir))
        pipe.set_progress_bar_config(disable=True)
        results: dict[int, dict[str, float]] = {}
        for batch in (1, 8):
            work = tmp / f"batch-{batch}"
            work.mkdir()
            config = write_config(work / "seedream.toml", model_dir, batch)
            server = start_server(work, "--config", str(config), "--no-auth", "--log-level", "warning")
            try:
                bare, http = latency(server, pipe, args.repeat)
                stages = server_stages(server)
                settle()
                wall = throughput(server, args.requests, args.rounds)
            finally:
                stop_server(server)
            results[batch] = {"bare": bare, "http": http, "wall": wall, **stages}
            print(
                f"max_batch_size={batch}: bare {bare * 1000:.0f} ms, request {http * 1000:.0f} ms, "
                f"ratio {http / bare:.3f}; server side: generate {stages['generate'] * 1000:.0f} ms, "
                f"encode {stages['encode'] * 1000:.0f} ms, whole job {stages['request'] * 1000:.0f} ms; "
                f"{args.requests} concurrent in {wall:.2f} s = {args.requests / wall:.2f} images/s",
                flush=True,
            )

    print()
    print(
        f"{time.strftime('%Y-%m-%d')} on {platform.machine()} ({platform.processor() or 'cpu'}), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), diffusers {diffusers.__version__}, "
        f"Python {platform.python_version()}"
    )
    print()
    print(
        "| max_batch_size | bare pipeline call | HTTP request (b64_json) | ratio | server: encode "
        f"| server: job - generate | {args.requests} concurrent: wall | images/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch, row in results.items():
        print(
            f"| {batch} | {row['bare'] * 1000:.0f} ms | {row['http'] * 1000:.0f} ms | {row['http'] / row['bare']:.3f} "
            f"| {row['encode'] * 1000:.0f} ms | {(row['request'] - row['generate']) * 1000:.0f} ms "
            f"| {row['wall']:.2f} s | {args.requests / row['wall']:.2f} |"
        )
    gain = results[1]["wall"] / results[8]["wall"]
    print(f"\nthroughput with batching / without: {gain:.2f}x")


if __name__ == "__main__":
    main()
