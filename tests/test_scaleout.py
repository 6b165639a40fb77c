"""SPEC §14 end to end, on loopback: two ``seedream serve`` processes sharing one bucket (a moto S3 server),
one key store (the PostgreSQL of ``.ci/run`` when ``SEEDREAM_TEST_DATABASE_URL`` is set, else one SQLite
file) and one local Ray of 2 CPUs serving a preview model on 2 replicas (``executor = "ray"``).

Process A gives presigned bucket links, process B its own signed proxy links; both serve any link. A key of
10 images per minute gets exactly 10 images across 20 requests split over A and B. Each image is logged with
the Ray replica that made it; both replicas serve both processes. A group streams image by image through
Ray, and killing the replica that runs it fails at most that job.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import LiveServer, start_server, stop_server
from ray_support import local_ray
from seedream_server.storage import UrlSigner
from seedream_server.storage.s3 import S3Storage
from support import GENERATIONS, iter_sse, wait_until

ray = pytest.importorskip("ray")

MODEL = "preview-ray"
BUCKET = "seedream-scaleout"
SECRET = "x" * 40  # the same signing secret on every API process: any of them serves any proxy link
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
REPLICA_LINE = re.compile(r"ray replica=(\S+) model=preview-ray request_id=(\S+) index=(\d+)")


@dataclass
class Topology:
    a: LiveServer
    b: LiveServer
    moto_url: str
    database_url: str
    limited_key: str  # 10 images per minute
    key: str  # plenty


def body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "a lighthouse", "size": "1024x1024", "response_format": "url", **fields}


def create_key(name: str, ipm: int, database_url: str, data_dir: Path) -> str:
    command = [sys.executable, "-m", "seedream_server.cli", "keys", "create", "--name", name, "--ipm", str(ipm)]
    command += ["--database-url", database_url, "--data-dir", str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin_url = os.environ.get("SEEDREAM_TEST_DATABASE_URL", "")
    if not admin_url:  # one SQLite file shared by both processes
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'shared.db'}"
        return
    name = f"seedream_scaleout_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, **_aws()).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def _aws() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS["AWS_DEFAULT_REGION"],
    }


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray of 2 CPUs for this module; the engines connect to it by its address."""
    with local_ray() as address:
        yield address


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory, moto_url: str, database_url: str, ray_address: str
) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("scaleout")
    config = root / "models.toml"
    config.write_text(
        f'[[models]]\nname = "{MODEL}"\nengine = "preview"\nexecutor = "ray"\nreplicas = 2\n'
        "ray_actor_options = {num_cpus = 0.5}\n",
        encoding="utf-8",
    )
    limited = create_key("k", 10, database_url, root / "cli")
    plenty = create_key("plenty", 10_000, database_url, root / "cli")
    env = {**AWS, "SEEDREAM_SIGNING_SECRET": SECRET}
    shared = ["--config", str(config), "--database-url", database_url, "--ray-address", ray_address]
    shared += ["--storage", f"s3://{BUCKET}/img", "--s3-endpoint-url", moto_url, "--max-queue", "32"]
    (root / "a").mkdir()
    (root / "b").mkdir()
    a = start_server(root / "a", *shared, env=env)  # deploys the Serve application
    try:
        b = start_server(root / "b", *shared, "--s3-url-mode", "proxy", env=env)  # finds it
    except BaseException:
        stop_server(a)
        raise
    yield Topology(a, b, moto_url, database_url, limited, plenty)
    stop_server(b)
    stop_server(a)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def replica_lines(server: LiveServer) -> list[tuple[str, str, int]]:
    return [(m[1], m[2], int(m[3])) for m in REPLICA_LINE.finditer(server.log.read_text(errors="replace"))]


def test_second_process_found_the_application_the_first_deployed(topology: Topology) -> None:
    a_log, b_log = topology.a.log.read_text(), topology.b.log.read_text()
    assert f"deploying model {MODEL}" in a_log
    assert f"model {MODEL} found running on the cluster" in b_log and "deploying model" not in b_log


def test_image_from_a_through_its_presigned_link_and_through_b(topology: Topology) -> None:
    response = httpx.post(topology.a.url + GENERATIONS, json=body(), headers=auth(topology.key), timeout=120)
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]
    assert url.startswith(topology.moto_url) and "X-Amz-Signature=" in url
    direct = httpx.get(url, timeout=30)
    assert direct.status_code == 200 and direct.content[:3] == b"\xff\xd8\xff"
    # the same object through B: a proxy link (the key below the prefix is the link path), any process signs it
    locator = urlsplit(url).path.split("/img/", 1)[1]
    client = boto3.client("s3", endpoint_url=topology.moto_url, **_aws())
    b_store = S3Storage(
        client, BUCKET, "img", signer=UrlSigner(SECRET.encode()), base_url=topology.b.url, url_mode="proxy"
    )
    proxied = httpx.get(b_store.url(locator), timeout=30)
    assert proxied.status_code == 200 and proxied.content == direct.content
    # and B's own links, made on B, stream from the bucket through A as well
    response = httpx.post(topology.b.url + GENERATIONS, json=body(), headers=auth(topology.key), timeout=120)
    link = response.json()["data"][0]["url"]
    assert link.startswith(f"{topology.b.url}/files/")
    through_a = httpx.get(topology.a.url + link.removeprefix(topology.b.url), timeout=30)
    assert through_a.status_code == 200 and through_a.content == httpx.get(link, timeout=30).content


def test_images_per_minute_hold_across_both_processes(topology: Topology) -> None:
    async def one(url: str) -> int:
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.post(url + GENERATIONS, json=body(), headers=auth(topology.limited_key))
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "ModelAccountIpmRateLimitExceeded"
            return 0
        assert response.status_code == 200, response.text
        return len(response.json()["data"])

    async def all_of_them() -> list[int]:
        servers = [topology.a.url, topology.b.url] * 10
        return list(await asyncio.gather(*(one(url) for url in servers)))

    images = asyncio.run(all_of_them())
    assert sum(images) == 10 and images.count(0) == 10


def test_both_replicas_serve_both_processes(topology: Topology) -> None:
    for _ in range(4):
        for server in (topology.a, topology.b):
            response = httpx.post(server.url + GENERATIONS, json=body(), headers=auth(topology.key), timeout=120)
            assert response.status_code == 200, response.text
    a_replicas = {replica for replica, _, _ in replica_lines(topology.a)}
    b_replicas = {replica for replica, _, _ in replica_lines(topology.b)}
    assert a_replicas and b_replicas
    assert len(a_replicas | b_replicas) == 2  # two replicas, shared: not two per process


def test_group_streams_image_by_image_and_a_killed_replica_fails_only_its_job(topology: Topology) -> None:
    group = body(
        prompt="生成12张猫的图片",
        size="4096x4096",
        stream=True,
        sequential_image_generation="auto",
        sequential_image_generation_options={"max_images": 12},
    )
    events: list[dict[str, Any]] = []
    killed = ""
    with httpx.stream(
        "POST", topology.a.url + GENERATIONS, json=group, headers=auth(topology.key), timeout=120
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        for event in iter_sse(response):
            if event.data == "[DONE]":
                break
            events.append(json.loads(event.data))
            if len(events) == 1:  # the first image arrived while the rest are being drawn: kill its replica
                assert events[0]["type"] == "image_generation.partial_succeeded" and events[0]["image_index"] == 0
                killed = _replica_of(topology.a, request_id)
                ray.kill(ray.get_actor(_actor_name(killed), namespace="serve"), no_restart=True)
    images = [e for e in events if e["type"] == "image_generation.partial_succeeded"]
    assert [e["image_index"] for e in images] == list(range(len(images)))  # one event per image, in order
    failed = [e for e in events if e["type"] == "image_generation.partial_failed" or "error" in e]
    if len(images) < 12:  # the kill caught the job mid-run: it failed with a clear error
        assert failed and "Ray replica serving preview-ray failed" in json.dumps(failed)
    # the next requests go to the live replica (and the one Serve starts in place of the dead one)
    for _ in range(3):
        for server in (topology.a, topology.b):
            response = httpx.post(server.url + GENERATIONS, json=body(), headers=auth(topology.key), timeout=120)
            assert response.status_code == 200, response.text


def _replica_of(server: LiveServer, request_id: str) -> str:
    def found() -> str:
        return next((r for r, rid, _ in replica_lines(server) if rid == request_id), "")

    return wait_until(found, "the replica of the first image in the server log", within=30)


def _actor_name(replica_id: str) -> str:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    return next(name for name in names if name.startswith(f"SERVE_REPLICA::{MODEL}#") and name.endswith(replica_id))
