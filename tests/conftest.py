"""Shared fixtures: settings in a temp data dir, an in-process ASGI client, and a real server subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

# a local Ray (tests of engines/ray.py and the scale-out topology) must use loopback for its own traffic;
# Ray reads this when imported, and server subprocesses inherit it
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from seedream_server.config import Settings, load_settings
from seedream_server.http import create_app
from support import running, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(overrides={"data_dir": str(tmp_path / "data"), "auth": False}, environ={})


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """In-process client; the app's lifespan runs around it."""
    async with running(app) as c:
        yield c


class LiveServer:
    def __init__(self, url: str, data_dir: Path, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.process = process
        self.log = log


def start_server(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> LiveServer:
    """Start ``seedream serve`` as a subprocess on a free loopback port and wait until it is ready."""
    port = free_port()
    data_dir = tmp / "data"
    log = tmp / "server.log"
    cmd = [sys.executable, "-m", "seedream_server.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), *extra]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDREAM_")}
    full_env.update(env or {})
    with open(log, "wb") as fh:
        process = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, "the server answered /readyz with 200", within=120, interval=0.1)
    except AssertionError:
        process.kill()
        process.wait()
        raise RuntimeError(f"server did not become ready: {log.read_text()}") from None
    return LiveServer(url, data_dir, process, log)


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real ``seedream serve --no-auth`` process shared by the subprocess-tier tests."""
    server = start_server(tmp_path_factory.mktemp("live"), "--no-auth")
    yield server
    stop_server(server)
