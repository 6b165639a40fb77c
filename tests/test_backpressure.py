"""Per-key images-per-minute limits under concurrency, the bounded queue, and graceful shutdown (SPEC §11, §13).

Limits and the queue run in process (50 truly concurrent requests on one event loop); shutdown needs a
real ``seedream serve`` process and a real SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import accounts_support
from accounts_support import bearer, make_settings
from conftest import LiveServer, start_server, stop_server
from seedream_server.accounts import AccountStore
from seedream_server.http import create_app
from support import GENERATIONS, MODEL, assert_error, body, eventually, iter_sse, running, wait_until

database_url = accounts_support.database_url

GROUP_OF_4 = {"sequential_image_generation": "auto", "prompt": "生成4张猫的图片"}


def new_key(tmp_path: Path, database_url: str = "", **options: Any) -> str:
    store = AccountStore.open(tmp_path / "data", database_url)
    try:
        return store.create_key(options.pop("name", "k"), **options)[1]
    finally:
        store.close()


def assert_429(response: httpx.Response, code: str) -> int:
    """The error envelope (plain JSON, streaming requests included) with a Retry-After of 1 to 60 s."""
    assert_error(response, 429, code)
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


# -- images per minute -----------------------------------------------------------------------------


async def test_no_over_grant_under_50_parallel_requests(tmp_path: Path, database_url: str) -> None:
    key = new_key(tmp_path, database_url, ipm=20)
    app = create_app(make_settings(tmp_path, database_url, max_queue=64))
    async with running(app) as client:
        responses = await asyncio.gather(
            *(client.post(GENERATIONS, json=body(seed=i), headers=bearer(key)) for i in range(50))
        )
        granted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert len(granted) == 20
        assert sum(r.json()["usage"]["generated_images"] for r in granted) == 20
        assert len(refused) == 30
        for r in refused:
            assert_429(r, "ModelAccountIpmRateLimitExceeded")
        assert app.state.accounts.limiter.used("k") == 20
        # the window is spent: the next image waits too
        assert_429(await client.post(GENERATIONS, json=body(), headers=bearer(key)), "ModelAccountIpmRateLimitExceeded")
        await app.state.accounts.drain()
        rows = app.state.accounts.store.usage_records()
    assert sum(r.images for r in rows) == 20
    assert sorted({r.status for r in rows}) == ["ModelAccountIpmRateLimitExceeded", "ok"]
    assert len(rows) == 51


async def test_a_group_counts_its_images(tmp_path: Path) -> None:
    key = new_key(tmp_path, ipm=5)
    app = create_app(make_settings(tmp_path))
    async with running(app) as client:
        r = await client.post(GENERATIONS, json=body(**GROUP_OF_4), headers=bearer(key))
        assert r.status_code == 200 and r.json()["usage"]["generated_images"] == 4
        r = await client.post(GENERATIONS, json=body(**GROUP_OF_4), headers=bearer(key))
        assert assert_429(r, "ModelAccountIpmRateLimitExceeded") >= 55  # 4 more fit only when the group expires
        assert (await client.post(GENERATIONS, json=body(), headers=bearer(key))).status_code == 200
        assert_429(await client.post(GENERATIONS, json=body(), headers=bearer(key)), "ModelAccountIpmRateLimitExceeded")
        # n counts as well, and a request larger than the whole limit says so
        other = new_key(tmp_path, name="small", ipm=3)
        r = await client.post(GENERATIONS, json=body(n=4), headers=bearer(other))
        assert_429(r, "ModelAccountIpmRateLimitExceeded")
        assert "more than the API key's limit of 3" in r.json()["error"]["message"]
        r = await client.post(GENERATIONS, json=body(n=3, stream=True), headers=bearer(other))
        assert r.status_code == 200 and r.text.count("event: image_generation.partial_succeeded") == 3


async def test_images_not_delivered_are_given_back(tmp_path: Path) -> None:
    key = new_key(tmp_path, ipm=2)
    app = create_app(make_settings(tmp_path, max_concurrency=1, max_queue=0))
    async with running(app) as client:
        slow = asyncio.create_task(client.post(GENERATIONS, json=body(size="4K"), headers=bearer(key)))
        await eventually(lambda: app.state.service.models.resolve(MODEL).queue.admitted, "the slow job holds its place")
        # the queue is full: refused after its image was reserved, so the reservation is released
        assert_429(await client.post(GENERATIONS, json=body(), headers=bearer(key)), "ServerOverloaded")
        assert (await slow).status_code == 200
        assert (await client.post(GENERATIONS, json=body(), headers=bearer(key))).status_code == 200
        assert_429(await client.post(GENERATIONS, json=body(), headers=bearer(key)), "ModelAccountIpmRateLimitExceeded")
        assert app.state.accounts.limiter.used("k") == 2


# -- the bounded queue -----------------------------------------------------------------------------


async def test_a_full_queue_answers_429_at_once_and_everything_accepted_completes(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, auth=False, max_concurrency=1, max_queue=2))
    finished: list[tuple[int, bool]] = []

    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        stream = i % 2 == 1
        r = await client.post(GENERATIONS, json=body(size="2K", seed=i, stream=stream, **GROUP_OF_4))
        finished.append((r.status_code, stream))
        return r

    async with running(app) as client:
        responses = await asyncio.gather(*(one(client, i) for i in range(10)))
        served = app.state.service.models.resolve(MODEL)
        assert served.queue.admitted == 0  # every place in the queue was given back
        metrics = (await client.get("/metrics")).text
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    accepted = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) >= 3 and refused, statuses  # 1 running + 2 waiting are always taken
    for r in refused:
        assert_429(r, "ServerOverloaded")  # plain JSON, streaming requests included
    for r in accepted:
        if r.headers["content-type"].startswith("text/event-stream"):
            assert r.text.count("event: image_generation.partial_succeeded") == 4 and "[DONE]" in r.text
        else:
            assert r.json()["usage"]["generated_images"] == 4
    # refusals come back before the first accepted job is done: no one waits to be told no
    first_ok = next(i for i, (status, _) in enumerate(finished) if status == 200)
    assert all(status == 429 for status, _ in finished[:first_ok])
    assert len(finished[:first_ok]) == len(refused)
    assert re.search(r'seedream_queue_depth\{model="[^"]+"\} 0\.0', metrics)


# -- graceful shutdown -----------------------------------------------------------------------------


def inflight(server: LiveServer) -> float:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    match = re.search(r"^seedream_inflight_requests (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def wait_for_inflight(server: LiveServer, count: int) -> None:
    wait_until(lambda: inflight(server) >= count, f"{count} requests in flight")


def shutting_down(server: LiveServer) -> bool:
    """uvicorn stopped accepting connections, or the app answers that it drains."""
    try:
        return httpx.get(server.url + "/readyz", timeout=5).status_code == 503
    except httpx.TransportError:
        return True


def post_json(url: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + GENERATIONS, json=payload, timeout=120)


def post_stream(url: str, payload: dict[str, Any]) -> tuple[int, list[str]]:
    with httpx.stream("POST", url + GENERATIONS, json=payload, timeout=120) as r:
        return r.status_code, [event.data for event in iter_sse(r)]


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--no-auth", "--max-concurrency", "2", "--shutdown-timeout-s", "60")
    slow = body(size="4K", **{**GROUP_OF_4, "prompt": "生成6张猫的图片"})
    with ThreadPoolExecutor(4) as pool:
        plain: Future[httpx.Response] = pool.submit(post_json, server.url, slow)
        streamed: Future[tuple[int, list[str]]] = pool.submit(post_stream, server.url, {**slow, "stream": True})
        try:
            wait_for_inflight(server, 2)
            server.process.send_signal(signal.SIGTERM)
            wait_until(lambda: shutting_down(server), "the server began to shut down")
            try:  # uvicorn closed its socket: refused, or 503 from the draining app; never another 5xx
                late = httpx.post(server.url + GENERATIONS, json=body(), timeout=10)
                assert late.status_code == 503 and late.json()["error"]["code"] == "ServiceUnavailable"
            except httpx.TransportError:
                pass
            response = plain.result(timeout=120)
            assert response.status_code == 200, response.text
            assert response.json()["usage"]["generated_images"] == 6
            status, events = streamed.result(timeout=120)
            assert status == 200
            assert events[-1] == "[DONE]"
            assert sum(json.loads(e)["type"] == "image_generation.partial_succeeded" for e in events[:-1]) == 6
            server.process.wait(timeout=30)
        finally:
            if server.process.poll() is None:
                stop_server(server)
    log = server.log.read_text()
    assert "Traceback" not in log


def test_shutdown_timeout_bounds_the_wait(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--no-auth", "--max-concurrency", "1", "--shutdown-timeout-s", "1")
    endless = body(size="4K", sequential_image_generation="auto", prompt="生成15张猫的图片")
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(post_json(server.url, endless).status_code)
        except httpx.TransportError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        wait_for_inflight(server, 1)
        server.process.send_signal(signal.SIGTERM)
        try:  # a hang guard only: what shows the wait was bounded is the cut-off job below
            server.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the server did not exit after SIGTERM")
    finally:
        if server.process.poll() is None:
            stop_server(server)
        thread.join(timeout=30)
    assert outcome and outcome[0] != 200  # cut off, not completed
    assert "timeout graceful shutdown exceeded" in server.log.read_text()
    store = AccountStore.open(server.data_dir)
    rows = store.usage_records()
    store.close()
    assert [(r.key_name, r.status) for r in rows] == [("-", "cancelled")]
    assert rows[0].images < 15
