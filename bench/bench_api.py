"""Benchmark: end-to-end HTTP latency of one generation vs the in-process cost of making that image.

Run: ``.venv/bin/python bench/bench_api.py [--repeat N]`` (about a minute; loopback traffic only).

A real ``seedream serve --no-auth`` subprocess (the preview engine) is started on a free loopback
port. For the 2K and 4K presets (2048x2048, 4096x4096) it measures, after a warm-up, the median of
``--repeat`` requests of:

* ``b64_json``: POST until the JSON body (with the base64 JPEG) is fully read;
* ``url``: POST until the JSON body is read (the image is already durable on disk), and
* ``url + GET``: the same plus downloading the image through its signed link;

and next to them the in-process cost of producing the same image in this process, calling the
pipeline's functions directly: ``engines.preview.render`` (generate), then ``postprocess.resize_to``,
``add_watermark`` and ``encode_image`` with provenance (finish). The ratio HTTP / in-process shows
what the server adds (validation, thread hand-offs, storage, base64, JSON, the socket).
"""

from __future__ import annotations

import argparse
import base64
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import start_server, stop_server  # noqa: E402
from seedream_server import postprocess  # noqa: E402
from seedream_server.config import DEFAULT_MODEL  # noqa: E402
from seedream_server.engines.base import ImageJob, ImageTask  # noqa: E402
from seedream_server.engines.preview import render  # noqa: E402
from seedream_server.sizes import SizeLimits, resolve_size  # noqa: E402

PROMPT = "a lighthouse on a cliff at dawn, volumetric light"
SEED = 1234
WARMUP = 2


def median_ms(func: Callable[[], Any], repeat: int) -> float:
    for _ in range(WARMUP):
        func()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def in_worker(func: Callable[[], Any], worker: ThreadPoolExecutor) -> Callable[[], Any]:
    """Run ``func`` on a worker thread, as the service does (``asyncio.to_thread``).

    On glibc the same image work is measurably slower on the main thread (large buffers come from
    the main malloc arena), so the in-process figure is taken where the server does the work.
    """
    return lambda: worker.submit(func).result()


def in_process(width: int, height: int, quality: int = 90) -> tuple[Callable[[], bytes], Callable[[], Any]]:
    """The same steps the service runs for one image: generate, then finish (resize, mark, encode)."""
    job = ImageJob(model=DEFAULT_MODEL, tasks=(ImageTask(0, PROMPT, SEED),), width=width, height=height)
    task = job.tasks[0]
    provenance = postprocess.Provenance(
        model=DEFAULT_MODEL, content_id="bench_0", created=int(time.time()), watermarked=True, engine="preview"
    )

    def finish(image: Any) -> bytes:
        image = postprocess.resize_to(image, width, height)
        image = postprocess.add_watermark(image)
        return postprocess.encode_image(image, provenance=provenance, quality=quality)

    def whole() -> bytes:
        return finish(render(job, task))

    rendered = render(job, task)
    return whole, lambda: finish(rendered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed requests per case (median; default 7)")
    args = parser.parse_args()
    repeat = max(5, args.repeat)

    print(f"python {platform.python_version()} on {platform.machine()}; median of {repeat} after {WARMUP} warm-up")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), "--no-auth", "--log-level", "warning")
        try:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                for preset in ("2K", "4K"):
                    width, height = resolve_size(preset, PROMPT, SizeLimits())
                    body = {"model": DEFAULT_MODEL, "prompt": PROMPT, "size": preset, "seed": SEED}

                    def post(fmt: str, body: dict[str, Any] = body) -> httpx.Response:
                        response = client.post("/api/v3/images/generations", json={**body, "response_format": fmt})
                        response.raise_for_status()
                        return response

                    def post_and_get(body: dict[str, Any] = body) -> bytes:
                        url = post("url", body).json()["data"][0]["url"]
                        return client.get(url).raise_for_status().content

                    jpeg = base64.b64decode(post("b64_json").json()["data"][0]["b64_json"])
                    http_b64 = median_ms(lambda: post("b64_json"), repeat)
                    http_url = median_ms(lambda: post("url"), repeat)
                    http_url_get = median_ms(post_and_get, repeat)
                    whole, finish_only = in_process(width, height)
                    with ThreadPoolExecutor(1) as worker:
                        local = median_ms(in_worker(whole, worker), repeat)
                        finish_ms = median_ms(in_worker(finish_only, worker), repeat)
                        main_ms = median_ms(whole, repeat)
                    rows.append(
                        (
                            preset,
                            f"{width}x{height}",
                            len(jpeg),
                            http_b64,
                            http_url,
                            http_url_get,
                            local,
                            finish_ms,
                            main_ms,
                        )
                    )
        finally:
            stop_server(server)

    header = (
        f"{'size':<4} {'pixels':>9} {'JPEG KB':>8} | {'b64_json':>9} {'url':>9} {'url+GET':>9} | "
        f"{'in-proc':>9} {'(finish)':>9} {'(main)':>9} | {'b64/in':>6} {'url/in':>6}"
    )
    print(header)
    print("-" * len(header))
    for preset, pixels, size, b64_ms, url_ms, url_get_ms, local_ms, finish_ms, main_ms in rows:
        print(
            f"{preset:<4} {pixels:>9} {size / 1024:>8.0f} | {b64_ms:>7.0f}ms {url_ms:>7.0f}ms {url_get_ms:>7.0f}ms | "
            f"{local_ms:>7.0f}ms {finish_ms:>7.0f}ms {main_ms:>7.0f}ms | "
            f"{b64_ms / local_ms:>6.2f} {url_ms / local_ms:>6.2f}"
        )
    print("in-proc = preview render + resize + watermark + JPEG encode with provenance, in this process, on a")
    print("worker thread as the server does; (finish) = its resize + watermark + encode part; (main) = in-proc")
    print("on the main thread instead. Ratios are HTTP median / in-proc median.")


if __name__ == "__main__":
    main()
