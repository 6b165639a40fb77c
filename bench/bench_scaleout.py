"""Scale-out (issue 13): the cost of the Ray hop, of S3 storage, and throughput with 1 and 2 API processes.
Prints figures and ratios measured side by side in one run; never pass/fail.

Run: ``.venv/bin/python bench/bench_scaleout.py`` (a few minutes on 2 cores; ``--parts a,b,c`` for some).
One local Ray of 2 CPUs (started here) and one moto S3 server on loopback serve every part:

a. **Ray hop**: the same job through the engine in process and through a ``RayEngine`` on one Serve
   replica (``executor = "ray"``): the preview engine at 2K (2048x2048) and a tiny SDXL pipeline
   (``tests/tiny_pipelines.py``, 2 steps, 64x64 native); median of ``--repeat`` jobs after 2 warm-ups, and
   the ratio. The hop carries the job there and each image back as raw RGB bytes.
b. **S3 store vs local**: ``S3Storage.put`` (moto on loopback) vs ``LocalStorage.put`` (temp file, fsync,
   rename) of a 2K and a 4K JPEG, and reading it back (``open`` and draining the body / reading the file).
c. **Throughput**: ``--requests`` 2K ``url`` requests, ``--clients`` at a time, against 1 ``seedream serve``
   and then spread over 2, every process using the same 2 Ray replicas of the preview engine; images per
   second.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Ray's own traffic on loopback (read when Ray is imported; the servers started here inherit it)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
from typing import Any

import boto3
import httpx
import ray
from moto.server import ThreadedMotoServer
from PIL import Image

from seedream_server.config import ModelConfig
from seedream_server.engines.base import Engine, ImageJob, ImageTask
from seedream_server.engines.registry import build_engine
from seedream_server.storage import LocalStorage, UrlSigner
from seedream_server.storage.s3 import S3Storage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
SECRET = b"b" * 32
NAME = "0123456789abcdef0123456789abcdef_{}.jpeg"


async def median_ms(fn: Callable[[], Awaitable[Any]], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        await fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def run_job(engine: Engine, job: ImageJob) -> None:
    async for result in engine.generate(job):
        assert result.image is not None


async def part_a(address: str, repeat: int, tmp: Path) -> None:
    import tiny_pipelines

    sdxl = tiny_pipelines.build_sdxl(tmp / "sdxl")
    cases = [
        ("preview 2K", ModelConfig("hop-preview", "preview"), 2048),
        ("tiny SDXL", ModelConfig("hop-sdxl", "diffusers", options={"source": str(sdxl), "steps": 2}), 64),
    ]
    print("\na. Ray hop: one job of one image, in process vs on one Serve replica (median ms)")
    print("| engine | size | in process | on Ray | Ray / in process |\n|---|---|---|---|---|")
    for label, config, size in cases:
        job = ImageJob(config.name, (ImageTask(0, "a lighthouse at dusk", 7),), size, size, request_id="bench")
        local = build_engine(config)
        await local.start()
        local_ms = await median_ms(lambda e=local, j=job: run_job(e, j), repeat)
        await local.aclose()
        ray_options = {"executor": "ray", "replicas": 1, "ray_actor_options": {"num_cpus": 1}}
        remote_name = config.name + "-ray"
        remote = build_engine(ModelConfig(remote_name, config.engine, (), {**config.options, **ray_options}))
        remote_job = ImageJob(remote_name, job.tasks, size, size, request_id="bench")
        await remote.start()
        ray_ms = await median_ms(lambda e=remote, j=remote_job: run_job(e, j), repeat)
        await remote.aclose()
        from ray import serve

        serve.delete(remote_name)
        print(f"| {label} | {size}x{size} | {local_ms:.1f} | {ray_ms:.1f} | {ray_ms / local_ms:.2f} |")


def jpeg(size: int) -> bytes:
    image = Image.effect_mandelbrot((size, size), (-2.0, -1.5, 1.0, 1.5), 100).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


async def drain(store: Any, link_name: str) -> None:
    image = await store.open(link_name, *store_link(store, link_name))
    if image.body is not None:
        async for _ in image.body:
            pass
    else:
        image.path.read_bytes()


def store_link(store: Any, name: str) -> tuple[str, str]:
    expires = int(time.time() + 3600)
    return str(expires), store.signer.signature(name, expires)


async def part_b(moto_url: str, repeat: int, tmp: Path) -> None:
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket="bench")
    signer = UrlSigner(SECRET)
    s3 = S3Storage.from_settings("s3://bench/img", moto_url, signer=signer, base_url="http://x", url_mode="proxy")
    local = LocalStorage(tmp / "images", signer, "http://x", 3600)
    print("\nb. Storing and reading one JPEG: S3 (moto on loopback) vs the local directory (median ms)")
    print("| size | JPEG | local put | S3 put | S3 / local | local read | S3 read (proxy stream) |")
    print("|---|---|---|---|---|---|---|")
    for size in (2048, 4096):
        data = jpeg(size)
        counter = iter(range(10_000))
        local_put = await median_ms(lambda c=counter, d=data: local.put(NAME.format(next(c) % 100), d), repeat)
        s3_put = await median_ms(lambda c=counter, d=data: s3.put(NAME.format(next(c) % 100), d), repeat)
        stored = await s3.put(NAME.format(0), data)
        locator = stored.url.split("/files/", 1)[1].split("?", 1)[0]
        await local.put(NAME.format(0), data)
        local_read = await median_ms(lambda: drain(local, NAME.format(0)), repeat)
        s3_read = await median_ms(lambda loc=locator: drain(s3, loc), repeat)
        print(
            f"| {size}x{size} | {len(data) // 1024} KB | {local_put:.1f} | {s3_put:.1f} | {s3_put / local_put:.1f} "
            f"| {local_read:.1f} | {s3_read:.1f} |"
        )
    await s3.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(tmp: Path, config: Path, address: str, moto_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SEEDREAM_")}, **AWS}
    command = [sys.executable, "-m", "seedream_server.cli", "serve", "--no-auth", "--port", str(port)]
    command += ["--data-dir", str(tmp), "--config", str(config), "--ray-address", address, "--max-queue", "64"]
    command += ["--storage", "s3://bench/tp", "--s3-endpoint-url", moto_url, "--signing-secret", SECRET.decode()]
    with open(tmp / "log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):  # bounded: up to 2 minutes
        if process.poll() is not None:
            raise RuntimeError((tmp / "log").read_text())
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready")


async def throughput(urls: list[str], requests: int, clients: int) -> float:
    body = {"model": "tp", "prompt": "a lighthouse", "size": "2048x2048", "response_format": "url"}
    queue = list(range(requests))
    async with httpx.AsyncClient(timeout=300) as client:

        async def worker(n: int) -> None:
            while queue:
                i = queue.pop()
                response = await client.post(urls[i % len(urls)] + "/api/v3/images/generations", json=body)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(clients)))
        return requests / (time.perf_counter() - started)


async def part_c(address: str, moto_url: str, requests: int, clients: int, tmp: Path) -> None:
    config = tmp / "models.toml"
    config.write_text(
        '[[models]]\nname = "tp"\nengine = "preview"\nexecutor = "ray"\nreplicas = 2\n'
        "ray_actor_options = {num_cpus = 0.5}\n"
    )
    first = start_server(tmp / "s1", config, address, moto_url)
    await throughput([first[1]], 4, 2)  # warm-up
    one = await throughput([first[1]], requests, clients)
    second = start_server(tmp / "s2", config, address, moto_url)
    await throughput([second[1]], 4, 2)
    two = await throughput([first[1], second[1]], requests, clients)
    for process, _ in (first, second):
        process.terminate()
        process.wait(timeout=30)
    print(f"\nc. Throughput, {requests} 2K url requests, {clients} at a time, 2 Ray replicas (images/s)")
    print("| API processes | images/s | vs 1 |\n|---|---|---|")
    print(f"| 1 | {one:.2f} | 1.00 |\n| 2 | {two:.2f} | {two / one:.2f} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="a,b,c")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    os.environ.update(AWS)
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, ray {ray.__version__}")  # fmt: skip
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2, namespace="bench")
    address = str(ray.get_runtime_context().gcs_address)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if "b" in args.parts:
                await part_b(moto_url, args.repeat, Path(tmp))
            else:
                boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket="bench")
            if "a" in args.parts:
                await part_a(address, args.repeat, Path(tmp))
            if "c" in args.parts:
                await part_c(address, moto_url, args.requests, args.clients, Path(tmp))
    finally:
        moto.stop()
        from ray import serve

        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
