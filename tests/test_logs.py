"""The server's log (issue 14): one structured line per request, refusals included (request id, key name never
the key, model, status, code, duration); 401s in the usage ledger; ``--log-format json``; Pillow's debug lines
held back. In process (records and ledger rows) and through a real ``seedream serve`` (what lands on stderr).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts_support import bearer, make_settings
from conftest import start_server, stop_server
from seedream_server.accounts import AccountStore, UsageRecord
from seedream_server.http import create_app
from seedream_server.logs import JsonFormatter
from support import GENERATIONS, MODEL, body, running

WRONG_KEY = "sk-" + "W" * 43  # a key the store does not know: it must appear nowhere


def request_lines(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, Any]]:
    """The request lines captured so far, by request id."""
    found = {}
    for record in caplog.records:
        if record.name == "seedream_server.request":
            fields: dict[str, Any] = record.fields  # type: ignore[attr-defined]
            found[fields["request_id"]] = fields
    return found


async def ledger(app: Any) -> list[UsageRecord]:
    await app.state.accounts.drain()
    records: list[UsageRecord] = await asyncio.to_thread(app.state.accounts.store.usage_records)
    return records


async def test_every_refusal_has_its_line_and_401_its_ledger_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seedream_server")
    app = create_app(make_settings(tmp_path, auth_failure_limit=2))
    store = AccountStore.open(tmp_path / "data")
    _, key = store.create_key("alice")
    _, only_other = store.create_key("bob", models=["doubao-seedream-4-5-251128"])
    store.close()
    async with running(app) as client:
        calls = {
            "ok": await client.post(GENERATIONS, json=body(size="1K"), headers=bearer(key)),
            "400": await client.post(GENERATIONS, json=body(size="7x7"), headers=bearer(key)),
            "401": await client.post(GENERATIONS, json=body(), headers=bearer(WRONG_KEY)),
            "403": await client.post(GENERATIONS, json=body(), headers=bearer(only_other)),
            "404": await client.post(GENERATIONS, json=body(model="no-such-model"), headers=bearer(key)),
            "405": await client.get(GENERATIONS, headers=bearer(key)),
        }
        await client.post(GENERATIONS, json=body(), headers=bearer(WRONG_KEY))  # the second failure...
        calls["429"] = await client.post(GENERATIONS, json=body(), headers=bearer(key))  # ...throttles the address
        app.state.begin_drain()
        calls["503"] = await client.post(GENERATIONS, json=body(), headers=bearer(key))
        rows = {row.request_id: row for row in await ledger(app)}
    lines = request_lines(caplog)
    expected = {
        "ok": (200, "-", "alice", MODEL),
        "400": (400, "InvalidParameter", "alice", MODEL),
        "401": (401, "AuthenticationError", "-", "-"),
        "403": (403, "AccessDenied", "bob", MODEL),
        "404": (404, "InvalidEndpointOrModel.NotFound", "alice", "no-such-model"),
        "405": (405, "InvalidRequest", "alice", "-"),
        "429": (429, "TooManyAuthenticationFailures", "-", "-"),
        "503": (503, "ServiceUnavailable", "-", "-"),
    }
    for name, (status, code, key_name, model) in expected.items():
        response = calls[name]
        assert response.status_code == status, (name, response.text)
        line = lines[response.headers["x-request-id"]]
        assert (line["status"], line["code"], line["key"], line["model"]) == (status, code, key_name, model), name
        assert line["method"] in ("GET", "POST") and line["path"] == GENERATIONS and line["duration_ms"] >= 0
    row = rows[calls["401"].headers["x-request-id"]]
    assert (row.key_name, row.model, row.status, row.images) == ("-", "-", "AuthenticationError", 0)
    assert rows[calls["ok"].headers["x-request-id"]].status == "ok"
    assert WRONG_KEY not in caplog.text and key not in caplog.text and WRONG_KEY[:12] not in caplog.text


def test_json_formatter_writes_the_fields() -> None:
    record = logging.LogRecord("seedream_server.request", logging.INFO, __file__, 1, "request %s", ("x",), None)
    record.fields = {"request_id": "abc", "status": 401, "model": 'a "quoted"\nname'}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "info" and entry["logger"] == "seedream_server.request"
    assert (entry["request_id"], entry["status"], entry["model"]) == ("abc", 401, 'a "quoted"\nname')


def test_serve_writes_json_lines_and_keeps_pillow_quiet(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--no-auth", "--log-format", "json", "--log-level", "debug")
    try:
        ok = httpx.post(server.url + GENERATIONS, json=body(size="1K"), timeout=60)
        bad = httpx.post(server.url + GENERATIONS, json=body(seed="x"), timeout=60)
        httpx.post(server.url + GENERATIONS, json=body(image="aGVsbG8gd29ybGQ" * 300), timeout=60)
    finally:
        stop_server(server)  # the log is complete once the process has ended
    assert ok.status_code == 200 and bad.status_code == 400
    entries = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    by_id = {e.get("request_id"): e for e in entries if e["logger"] == "seedream_server.request"}
    assert by_id[bad.headers["x-request-id"]]["code"] == "InvalidParameter"
    assert by_id[ok.headers["x-request-id"]]["status"] == 200
    job_lines = [
        e for e in entries if ok.headers["x-request-id"] in e["message"] and e["logger"] != "seedream_server.request"
    ]
    assert job_lines, "the job's own line"
    assert not [e for e in entries if e["logger"].startswith("PIL")]
    assert "aGVsbG8gd29ybGQaGVsbG8gd29ybGQaGVsbG8gd29ybGQ" not in server.log.read_text()  # never the whole input
