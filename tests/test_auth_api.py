"""API keys on the wire (SPEC §9, §11): 401 / 403 / 200, open routes, the usage ledger, the first-start key,
and that a key never appears in clear in the database or the server log.

Most tests run the app in process against a real SQLite file (and PostgreSQL when available); what only
a real process shows (stdout on first start, the log file, the ``seedream`` commands) uses a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import accounts_support
from accounts_support import OTHER_MODEL, TWO_MODELS, bearer, make_settings
from conftest import LiveServer, start_server, stop_server
from seedream_server.accounts import AccountStore, UsageRecord
from seedream_server.http import create_app
from support import GENERATIONS, MODEL, assert_error, body, iter_sse, running, wait_until

database_url = accounts_support.database_url

KEY_LINE = re.compile(r"Created API key 'default' \(shown once[^)]*\): (sk-[A-Za-z0-9_-]{43})")


@dataclass
class Keys:
    full: str
    only_b: str
    by_alias: str
    revoked: str


@pytest.fixture
def keys(tmp_path: Path, database_url: str) -> Keys:
    store = AccountStore.open(tmp_path / "data", database_url)
    made = Keys(
        full=store.create_key("full")[1],
        only_b=store.create_key("only-b", models=[OTHER_MODEL])[1],
        by_alias=store.create_key("by-alias", models=["seedream-4.0"])[1],
        revoked=store.create_key("gone")[1],
    )
    store.revoke_key("gone")
    store.close()
    return made


@pytest.fixture
def app(tmp_path: Path, database_url: str, keys: Keys) -> FastAPI:
    # these tests make many failed attempts from one address on purpose: throttling has its own test
    return create_app(make_settings(tmp_path, database_url, models=TWO_MODELS, auth_failure_limit=1000))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as c:
        yield c


async def ledger(app: FastAPI) -> list[UsageRecord]:
    await app.state.accounts.drain()
    records: list[UsageRecord] = await asyncio.to_thread(app.state.accounts.store.usage_records)
    return records


# -- 401 / 403 / 200 -------------------------------------------------------------------------------


async def test_missing_malformed_unknown_or_revoked_keys_get_401(client: httpx.AsyncClient, keys: Keys) -> None:
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer  "},
        {"Authorization": "Basic x"},
        {"Authorization": f"Token {keys.full}"},
        {"Authorization": keys.full},
        {"Authorization": "Bearer sk-" + "A" * 43},
        {"Authorization": f"Bearer {keys.full}x"},
        bearer(keys.revoked),
    ]
    for headers in cases:
        for path in (GENERATIONS, "/v1/images/generations"):
            r = await client.post(path, json=body(), headers=headers)
            assert_error(r, 401, "AuthenticationError")
            assert r.json()["error"]["type"] == "authentication_error"
        for path in ("/v1/models", "/api/v3/models"):
            assert_error(await client.get(path, headers=headers), 401, "AuthenticationError")
    # multipart edits are refused before the upload is read
    r = await client.post("/v1/images/edits", data={"model": MODEL, "prompt": "x"}, files={"image[]": b"x"})
    assert_error(r, 401, "AuthenticationError")


async def test_a_valid_key_generates(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.post(GENERATIONS, json=body(), headers=bearer(keys.full))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["generated_images"] == 1
    r = await client.post("/v1/images/generations", json=body(model="b-alias"), headers=bearer(keys.full))
    assert r.status_code == 200, r.text


async def test_a_model_outside_the_key_list_is_403(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.post(GENERATIONS, json=body(), headers=bearer(keys.only_b))
    assert_error(r, 403, "AccessDenied")
    assert r.json()["error"]["param"] == "model"
    r = await client.post(GENERATIONS, json=body(model="seedream-4.0"), headers=bearer(keys.only_b))
    assert_error(r, 403, "AccessDenied")  # an alias of a model the key may not use
    r = await client.post(GENERATIONS, json=body(model="b-alias"), headers=bearer(keys.only_b))
    assert r.status_code == 200, r.text
    # a key listing an alias may use the model under any of its names
    for name in (MODEL, "seedream-4.0", "doubao-seedream-4.0"):
        r = await client.post(GENERATIONS, json=body(model=name), headers=bearer(keys.by_alias))
        assert r.status_code == 200, r.text
    r = await client.post(GENERATIONS, json=body(model=OTHER_MODEL), headers=bearer(keys.by_alias))
    assert_error(r, 403, "AccessDenied")
    # an unknown model is still a 404 for anyone
    r = await client.post(GENERATIONS, json=body(model="nope"), headers=bearer(keys.only_b))
    assert_error(r, 404, "InvalidEndpointOrModel.NotFound")


async def test_models_lists_what_the_key_may_use(client: httpx.AsyncClient, keys: Keys) -> None:
    def ids(r: httpx.Response) -> list[str]:
        assert r.status_code == 200, r.text
        return [m["id"] for m in r.json()["data"]]

    assert ids(await client.get("/v1/models", headers=bearer(keys.full))) == [MODEL, OTHER_MODEL]
    assert ids(await client.get("/v1/models", headers=bearer(keys.only_b))) == [OTHER_MODEL]
    assert ids(await client.get("/api/v3/models", headers=bearer(keys.by_alias))) == [MODEL]


async def test_health_metrics_docs_and_signed_files_need_no_key(client: httpx.AsyncClient, keys: Keys) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert (await client.get(path)).status_code == 200, path
    r = await client.post(GENERATIONS, json=body(response_format="url"), headers=bearer(keys.full))
    url = r.json()["data"][0]["url"]
    assert (await client.get(url)).status_code == 200  # the signature is the credential
    assert_error(await client.get(url.split("?")[0]), 403, "AccessDenied")


# -- usage ledger ----------------------------------------------------------------------------------


async def test_every_request_after_auth_is_in_the_ledger(app: FastAPI, client: httpx.AsyncClient, keys: Keys) -> None:
    ok = await client.post(GENERATIONS, json=body(n=2), headers=bearer(keys.full))
    assert ok.status_code == 200
    denied = await client.post(GENERATIONS, json=body(), headers=bearer(keys.only_b))
    invalid = await client.post(GENERATIONS, json=body(seed="x"), headers=bearer(keys.full))
    assert_error(invalid, 400, "InvalidParameter")
    bad_size = await client.post(GENERATIONS, json=body(model="seedream-4.0", size="7x7"), headers=bearer(keys.full))
    assert_error(bad_size, 400, "InvalidParameter")
    unknown = await client.post(GENERATIONS, json=body(model="nope"), headers=bearer(keys.full))
    revoked = await client.post(GENERATIONS, json=body(), headers=bearer(keys.revoked))  # 401: in the ledger as "-"
    await client.get("/v1/models", headers=bearer(keys.full))  # not a generation: not in the ledger
    streamed = await client.post(GENERATIONS, json=body(stream=True), headers=bearer(keys.by_alias))
    assert streamed.status_code == 200 and "[DONE]" in streamed.text

    rows = {r.request_id: r for r in await ledger(app)}
    assert len(rows) == 7
    refused = rows[revoked.headers["x-request-id"]]
    assert (refused.key_name, refused.model, refused.images, refused.status) == ("-", "-", 0, "AuthenticationError")
    row = rows[ok.headers["x-request-id"]]
    assert (row.key_name, row.model, row.images, row.tokens, row.status) == ("full", MODEL, 2, 2 * 3600, "ok")
    assert row.duration_ms >= 0 and row.ts is not None
    assert (rows[denied.headers["x-request-id"]].key_name, rows[denied.headers["x-request-id"]].status) == (
        "only-b",
        "AccessDenied",
    )
    assert rows[invalid.headers["x-request-id"]].status == "InvalidParameter"
    assert rows[invalid.headers["x-request-id"]].model == MODEL
    assert rows[bad_size.headers["x-request-id"]].model == MODEL  # aliases resolve to the model's name
    # a name the server does not serve is not written to the ledger as given
    assert (rows[unknown.headers["x-request-id"]].model, rows[unknown.headers["x-request-id"]].status) == (
        "-",
        "InvalidEndpointOrModel.NotFound",
    )
    row = rows[streamed.headers["x-request-id"]]
    assert (row.key_name, row.images, row.status) == ("by-alias", 1, "ok")


async def test_without_auth_everything_is_allowed_and_recorded_as_dash(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, auth=False))
    async with running(app) as client:
        r = await client.post(GENERATIONS, json=body())
        assert r.status_code == 200, r.text
        assert (await client.get("/v1/models", headers={"Authorization": "Basic nonsense"})).status_code == 200
        rows = await ledger(app)
    assert [(r.key_name, r.status, r.images) for r in rows] == [("-", "ok", 1)]
    store = AccountStore.open(tmp_path / "data")
    assert store.list_keys() == []  # no key is created with --no-auth
    store.close()


# -- first start, draining -------------------------------------------------------------------------


async def test_first_start_creates_one_key_and_prints_it_once(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, database_url)
    async with running(create_app(settings)) as client:
        out = capsys.readouterr().out
        match = KEY_LINE.search(out)
        assert match, out
        key = match.group(1)
        assert (await client.post(GENERATIONS, json=body(), headers=bearer(key))).status_code == 200
    async with running(create_app(settings)):
        assert "Created API key" not in capsys.readouterr().out
    store = AccountStore.open(tmp_path / "data", database_url)
    assert [k.name for k in store.list_keys()] == ["default"]
    store.close()


async def test_draining_refuses_new_requests_with_503(app: FastAPI, client: httpx.AsyncClient, keys: Keys) -> None:
    assert (await client.get("/readyz")).json()["status"] == "ready"
    app.state.begin_drain()
    r = await client.post(GENERATIONS, json=body(), headers=bearer(keys.full))
    assert_error(r, 503, "ServiceUnavailable")
    assert int(r.headers["retry-after"]) >= 1
    assert_error(await client.get("/v1/models"), 503, "ServiceUnavailable")
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "draining"


# -- a real process --------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seedream_server.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_first_start_prints_the_key_on_stdout_and_it_works(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        log = server.log.read_text()
        match = KEY_LINE.search(log)
        assert match, log
        key = match.group(1)
        assert log.count(key) == 1  # printed once, never logged
        r = httpx.post(server.url + GENERATIONS, json=body(), headers=bearer(key), timeout=60)
        assert r.status_code == 200, r.text
        r = httpx.post(server.url + GENERATIONS, json=body(), timeout=60)
        assert r.status_code == 401
    finally:
        stop_server(server)
    restarted = start_server(tmp_path)  # same data dir: the key exists, nothing is printed
    try:
        assert "Created API key" not in restarted.log.read_text()
        listed = cli("keys", "list", "--data-dir", str(restarted.data_dir))
        assert "default" in listed.stdout and key not in listed.stdout
    finally:
        stop_server(restarted)


def test_a_key_never_appears_in_clear_in_the_database_or_the_log(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    created = cli("keys", "create", "--name", "alice", "--ipm", "100", "--data-dir", str(data_dir))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    limited = cli("keys", "create", "--name", "bob", "--models", "nope", "--data-dir", str(data_dir))
    bob = limited.stdout.strip().splitlines()[-1]
    server: LiveServer = start_server(tmp_path, "--log-level", "debug")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.post(GENERATIONS, json=body(n=2), headers=bearer(key)).status_code == 200
            assert http.post(GENERATIONS, json=body(stream=True), headers=bearer(key)).status_code == 200
            assert http.post(GENERATIONS, json=body(seed="x"), headers=bearer(key)).status_code == 400
            assert http.post(GENERATIONS, json=body(), headers=bearer(bob)).status_code == 403
            assert http.post(GENERATIONS, json=body(), headers=bearer(key + "x")).status_code == 401
            assert http.get("/v1/models", headers=bearer(key)).status_code == 200
    finally:
        stop_server(server)  # the ledger is drained on shutdown
    log = server.log.read_bytes()
    assert b"request_id=" in log  # the log did record the requests
    blobs = {p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file()}
    assert "seedream.db" in blobs
    for secret in (key, bob):
        assert secret.encode() not in log
        assert secret[8:].encode() not in log
        for name, blob in blobs.items():
            assert secret[8:].encode() not in blob, name

    usage = cli("usage", "--data-dir", str(data_dir))
    assert usage.returncode == 0, usage.stderr
    rows = [line.replace("│", " ").split() for line in usage.stdout.splitlines() if "alice" in line or "bob" in line]
    assert ["alice", MODEL, "3", "3", f"{3 * 3600:,}", "1", "0"] in rows
    assert ["bob", MODEL, "1", "0", "0", "1", "0"] in rows
    assert key not in usage.stdout


def test_a_stream_cut_by_the_client_is_recorded_as_cancelled(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = cli("keys", "create", "--name", "alice", "--data-dir", str(data_dir)).stdout.strip().splitlines()[-1]
    server = start_server(tmp_path)
    try:
        group = body(size="4K", stream=True, sequential_image_generation="auto", prompt="生成8张猫的图片")
        with (
            httpx.Client(base_url=server.url, timeout=60) as http,
            http.stream("POST", GENERATIONS, json=group, headers=bearer(key)) as r,
        ):
            assert r.status_code == 200
            request_id = r.headers["x-request-id"]
            first = next(iter_sse(r))  # leave after the first image: the server cancels the rest
            assert json.loads(first.data)["type"] == "image_generation.partial_succeeded"

        store = AccountStore.open(data_dir)

        def settled() -> bool:  # the row exists from admission ("running"); wait for the job to settle it
            return any(r.request_id == request_id and r.status != "running" for r in store.usage_records())

        wait_until(settled, "the cancelled job's ledger row settled")
        row = next(r for r in store.usage_records() if r.request_id == request_id)
        assert row.status == "cancelled"
        assert 1 <= row.images < 8
        store.close()
    finally:
        stop_server(server)


async def test_repeated_failed_authentication_from_one_address_gets_429(tmp_path: Path, keys: Keys) -> None:
    app = create_app(make_settings(tmp_path, models=TWO_MODELS, auth_failure_limit=3))
    async with running(app) as client:
        for _ in range(3):
            assert_error(await client.get("/v1/models", headers=bearer("sk-wrong")), 401, "AuthenticationError")
        throttled = await client.get("/v1/models", headers=bearer("sk-wrong"))
        assert_error(throttled, 429, "TooManyAuthenticationFailures")
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        # even a valid key from that address waits: a guesser learns nothing until the window passes
        assert_error(await client.get("/v1/models", headers=bearer(keys.full)), 429, "TooManyAuthenticationFailures")
