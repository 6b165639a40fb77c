"""Gateway overhead: the same request straight to an upstream vs through this server as an ark or openai relay.

Run: ``.venv/bin/python bench/bench_gateway.py [--repeat 20] [--rounds 3]`` (a few minutes; loopback only).

Two real ``seedream serve --no-auth`` subprocesses on free loopback ports:

* the **upstream**: the preview engine (it speaks both shapes: Ark's ``/api/v3/images/generations`` and
  OpenAI's ``/v1/images/generations``);
* the **gateway**: four relay models over that upstream (``ark`` and ``openai``, each with ``rehost = false``
  and ``rehost = true``), configured by a TOML file with the issue's option names.

For 2K (``2048x2048``), ``b64_json`` and ``url``, it times the same request sent straight to the upstream
(``direct``) and through each relay (``gateway``):

* **in a row**: ``--repeat`` requests one after another, direct and gateway interleaved (ABAB, so that
  drift on a shared machine hits both), median latency until the JSON body is read;
* **8 at once**: 8 concurrent requests, the wall time until the last body is read, median of ``--rounds``
  rounds (direct and gateway rounds alternate);
* **streaming**: an Ark group of 4 with ``stream = true`` (``url``), time to the first
  ``partial_succeeded`` event, median of ``--repeat`` (direct vs the ark relays).

It prints figures and ratios (gateway / direct) side by side; it never passes or fails. The issue's goal
is a ratio <= 1.05 in a row with rehost off; rehost on costs a fetch, a decode, provenance, a JPEG
encode and a durable write per image, which is what its ratio shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import start_server, stop_server  # noqa: E402

UPSTREAM_MODEL = "doubao-seedream-4-0-250828"
ARK_PATH = "/api/v3/images/generations"
OPENAI_PATH = "/v1/images/generations"
PROMPT = "a lighthouse on a cliff at dawn, volumetric light"
SIZE = "2048x2048"
CONCURRENT = 8
WARMUP = 2
#: gateway model name -> (engine, rehost)
RELAYS = {
    "ark-relay": ("ark", False),
    "ark-rehost": ("ark", True),
    "openai-relay": ("openai", False),
    "openai-rehost": ("openai", True),
}


def gateway_config(path: Path, upstream: str) -> Path:
    lines: list[str] = ["[server]", "max_concurrency = 8", "max_queue = 32", ""]
    for name, (engine, rehost) in RELAYS.items():
        lines += ["[[models]]", f'name = "{name}"', f'engine = "{engine}"']
        if engine == "ark":
            lines.append(f'base_url = "{upstream}/api/v3"')
        else:
            lines.append(f'base_urls = ["{upstream}/v1"]')
        lines += [
            f'upstream_model = "{UPSTREAM_MODEL}"',
            f"rehost = {'true' if rehost else 'false'}",
            'api_keys = ["bench-upstream-key"]',
            "timeout_s = 120",
            "max_retries = 0",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def payload(model: str, response_format: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "prompt": PROMPT, "size": SIZE, "response_format": response_format, "seed": 7, **extra}


class Target:
    """One way of sending the request: a URL and a model name."""

    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model

    def post(self, client: httpx.Client, response_format: str) -> float:
        started = time.perf_counter()
        response = client.post(self.url, json=payload(self.model, response_format))
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{self.model} at {self.url}: {response.status_code} {response.text[:300]}")
        item = response.json()["data"][0]
        if not item.get("b64_json" if response_format == "b64_json" else "url"):
            raise RuntimeError(f"{self.model}: no {response_format} in {str(item)[:200]}")
        return elapsed

    def first_image(self, client: httpx.Client) -> float:
        body = payload(self.model, "url", stream=True, sequential_image_generation="auto")
        body["sequential_image_generation_options"] = {"max_images": 4}
        started = time.perf_counter()
        first = 0.0
        with client.stream("POST", self.url, json=body) as response:
            if response.status_code != 200:
                raise RuntimeError(f"{self.model}: {response.status_code} {response.read()[:300]!r}")
            for line in response.iter_lines():
                if not first and line.startswith("event: image_generation.partial_succeeded"):
                    first = time.perf_counter() - started
        if not first:
            raise RuntimeError(f"{self.model}: the stream had no image")
        return first


def in_a_row(client: httpx.Client, pair: tuple[Target, Target], fmt: str, repeat: int) -> tuple[float, float]:
    """Median latency of direct and gateway, interleaved."""
    for target in pair:
        for _ in range(WARMUP):
            target.post(client, fmt)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for i, target in enumerate(pair):
            times[i].append(target.post(client, fmt))
    return statistics.median(times[0]), statistics.median(times[1])


def at_once(pool: ThreadPoolExecutor, client: httpx.Client, pair: tuple[Target, Target], fmt: str, rounds: int):
    """Median wall time of CONCURRENT requests at once, direct and gateway rounds alternating."""

    def burst(target: Target) -> float:
        started = time.perf_counter()
        list(pool.map(lambda _: target.post(client, fmt), range(CONCURRENT)))
        return time.perf_counter() - started

    for target in pair:
        burst(target)  # warm-up: opens the connections
    walls: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for i, target in enumerate(pair):
            walls[i].append(burst(target))
    return statistics.median(walls[0]), statistics.median(walls[1])


def streaming(client: httpx.Client, pair: tuple[Target, Target], repeat: int) -> tuple[float, float]:
    for target in pair:
        target.first_image(client)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for i, target in enumerate(pair):
            times[i].append(target.first_image(client))
    return statistics.median(times[0]), statistics.median(times[1])


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    return f"{date}; nproc {os.cpu_count()}; {model}; Python {platform.python_version()}; load {load}"


def row(label: str, fmt: str, direct: float, gateway: float) -> str:
    figures = f"{direct * 1000:.0f} ms | {gateway * 1000:.0f} ms | {(gateway - direct) * 1000:+.0f} ms"
    return f"| {label} | {fmt} | {figures} | {gateway / direct:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=20, help="requests in a row per target and format")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 8 concurrent requests per target")
    parser.add_argument("--relays", default=",".join(RELAYS), help="comma-separated gateway models to measure")
    parser.add_argument("--parts", default="row,burst,stream", help="comma-separated: row, burst, stream")
    args = parser.parse_args()
    relays = [name for name in args.relays.split(",") if name]
    parts = set(args.parts.split(","))
    print(f"# bench_gateway: {machine()}")
    print(f"# 2K ({SIZE}), preview upstream; repeat {args.repeat}, rounds {args.rounds}; gateway / direct")
    with tempfile.TemporaryDirectory() as tmp:
        up_dir, gw_dir = Path(tmp, "upstream"), Path(tmp, "gateway")
        up_dir.mkdir()
        gw_dir.mkdir()
        upstream = start_server(up_dir, "--no-auth", "--log-level", "warning", "--max-concurrency", "8")
        gateway = None
        try:
            config = gateway_config(gw_dir / "gateway.toml", upstream.url)
            gateway = start_server(gw_dir, "--no-auth", "--log-level", "warning", "--config", str(config))
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=2)
            with httpx.Client(timeout=600, limits=limits) as client, ThreadPoolExecutor(CONCURRENT) as pool:
                models = client.get(f"{gateway.url}/v1/models").json()
                print(f"# gateway models: {json.dumps(models)[:400]}")
                print("| measure | format | direct | gateway | added | ratio |")
                print("|---|---|---|---|---|---|")
                for name in relays:
                    engine, rehost = RELAYS[name]
                    path = ARK_PATH if engine == "ark" else OPENAI_PATH
                    pair = (Target(upstream.url + path, UPSTREAM_MODEL), Target(gateway.url + path, name))
                    label = f"{engine} rehost {'on' if rehost else 'off'}"
                    for fmt in ("b64_json", "url"):
                        if "row" in parts:
                            print(
                                row(
                                    f"{label}, in a row (median of {args.repeat})",
                                    fmt,
                                    *in_a_row(client, pair, fmt, args.repeat),
                                ),
                                flush=True,
                            )
                        if "burst" in parts:
                            print(
                                row(
                                    f"{label}, {CONCURRENT} at once (wall)",
                                    fmt,
                                    *at_once(pool, client, pair, fmt, args.rounds),
                                ),
                                flush=True,
                            )
                    if engine == "ark" and "stream" in parts:
                        print(
                            row(f"{label}, stream: first of 4", "url", *streaming(client, pair, args.repeat)),
                            flush=True,
                        )
        finally:
            if gateway is not None:
                stop_server(gateway)
            stop_server(upstream)
    print(f"# done: load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
