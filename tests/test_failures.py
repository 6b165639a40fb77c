"""Failure paths: ledger status of failed and cut-off jobs, unhandled errors still carry the request id,
queue places held while references are fetched, client disconnects on non-streaming requests, and log
lines that client strings cannot forge."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from checks import BrokenEngine, FlakyEngine
from conftest import start_server, stop_server
from refserver import ImageServer, encode, solid
from seedream_server.accounts import AccountStore
from seedream_server.config import ModelConfig, Settings
from seedream_server.http import create_app
from support import GENERATIONS, MODEL, body, running, served_metric, wait_until


async def ledger(app: Any) -> dict[str, tuple[str, int]]:
    await app.state.accounts.drain()
    rows = await asyncio.to_thread(app.state.accounts.store.usage_records)
    return {row.request_id: (row.status, row.images) for row in rows}


@pytest.mark.parametrize("good", [0, 1])
@pytest.mark.parametrize("stream", [False, True])
async def test_engine_failure_is_in_the_ledger_as_such(settings: Settings, good: int, stream: bool) -> None:
    flaky = replace(settings, models=(ModelConfig(name="flaky-model", engine="flaky"),))
    app = create_app(flaky, engine_factories={"flaky": lambda m: FlakyEngine(good=good)})
    async with running(app) as client:
        r = await client.post(
            GENERATIONS,
            json=body(
                model="flaky-model",
                prompt="a set of 4 pictures of a boat",
                sequential_image_generation="auto",
                stream=stream,
            ),
        )
        rows = await ledger(app)
        metrics = (await client.get("/metrics")).text
    assert rows[r.headers["x-request-id"]] == ("InternalServiceError", good)
    assert 'seedream_requests_total{model="flaky-model",status="InternalServiceError"} 1.0' in metrics


async def test_storage_failure_stops_the_group_with_an_error(settings: Settings) -> None:
    app = create_app(settings)
    images = Path(settings.data_dir) / "images"
    async with running(app) as client:
        images.rmdir()
        images.write_bytes(b"")  # a file where the directory should be: every write fails, even as root
        try:
            r = await client.post(GENERATIONS, json=body(response_format="url"))
            group = await client.post(
                GENERATIONS,
                json=body(
                    response_format="url", prompt="a set of 3 pictures of a boat", sequential_image_generation="auto"
                ),
            )
        finally:
            images.unlink()
            images.mkdir()
        rows = await ledger(app)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "InternalServiceError"
    assert rows[r.headers["x-request-id"]] == ("InternalServiceError", 0)
    assert group.status_code == 500  # the first image failed to store: the group stopped there
    assert rows[group.headers["x-request-id"]] == ("InternalServiceError", 0)


async def test_unhandled_error_has_request_id_and_is_counted(settings: Settings) -> None:
    broken = replace(settings, models=(ModelConfig(name="broken-model", engine="broken"),))
    app = create_app(broken, engine_factories={"broken": lambda m: BrokenEngine()})
    async with running(app, raise_app_exceptions=False) as client:
        r = await client.post(GENERATIONS, json=body(model="broken-model"))
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "InternalServiceError"
    assert "Traceback" not in r.text and "bug in an engine" not in r.text
    assert r.headers["x-request-id"] and r.headers["x-request-id"] in r.json()["error"]["message"]
    assert 'seedream_http_responses_total{status="500"} 1.0' in metrics


def test_queue_place_is_held_while_references_are_fetched(tmp_path: Path) -> None:
    """With room for 2 jobs, 6 concurrent requests with slow references: 4 are refused before fetching."""
    with ImageServer() as images:
        images.files["a.png"] = (encode(solid((64, 64)), "PNG"), "image/png")
        server = start_server(
            tmp_path, "--no-auth", "--max-concurrency", "1", "--max-queue", "1", "--reference-allowlist", "127.0.0.1/32"
        )
        try:
            refs = [images.url("/slow/800/a.png")] * 3
            results: list[int] = []

            def call() -> None:
                r = httpx.post(f"{server.url}{GENERATIONS}", timeout=60, json=body(image=refs, response_format="url"))
                results.append(r.status_code)

            threads = [threading.Thread(target=call) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        finally:
            stop_server(server)
        assert sorted(results) == [200, 200, 429, 429, 429, 429]
        assert images.peak <= 2 * len(refs)  # only the admitted requests fetched
        assert len([p for p in images.paths if p.startswith("/slow/")]) == 2 * len(refs)


def test_non_streaming_client_disconnect_cancels_the_job(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--no-auth")
    images = server.data_dir / "images"
    try:
        payload = body(
            prompt="a series of 15 pictures of a lighthouse",
            size="4K",
            sequential_image_generation="auto",
            response_format="url",
        )
        with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(60, read=0.8)) as client:
            client.post(f"{server.url}{GENERATIONS}", json=payload)
        # the server counts the job as cancelled once it has stopped it: from then on nothing is stored
        cancelled = {"model": MODEL, "status": "cancelled"}
        wait_until(
            lambda: served_metric(server.url, "seedream_requests_total", **cancelled) == 1,
            "the job was counted as cancelled",
        )
        settled = len(list(images.glob("*_*.jpeg")))
    finally:
        stop_server(server)
    assert server.process.returncode is not None  # the server has exited: nothing more can be written
    assert len(list(images.glob("*_*.jpeg"))) == settled < 15
    store = AccountStore.open(server.data_dir)
    rows = store.usage_records()
    store.close()
    assert [(r.status, r.images < 15) for r in rows] == [("cancelled", True)]


async def test_user_string_cannot_forge_log_lines(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    forged = "bob\nINFO seedream_server.service request_id=forged model=x images=1/1 status=ok user=admin"
    with caplog.at_level(logging.INFO, logger="seedream_server.job"):
        r = await client.post(GENERATIONS, json=body(user=forged[:200]))
    assert r.status_code == 200
    lines = [rec.getMessage() for rec in caplog.records if "request_id=" in rec.getMessage()]
    assert lines and all("\n" not in line for line in lines)
