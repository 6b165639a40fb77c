"""The relay engines (``ark``, ``openai``) against a real upstream that misbehaves on cue.

Every test drives OUR server (``create_app`` in process, or a ``seedream serve`` subprocess) configured by a
TOML file with the issue's option names, in front of :class:`upstream_faults.FaultServer` on 127.0.0.1,
and asserts on what the client got and on what the upstream received (calls, keys, bodies). Waits are on
events (a call arriving, a response); no test asserts that something was fast. Upstream keys must never
reach a response body or a log line: every test checks both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conftest import start_server, stop_server
from refserver import data_uri, encode, solid
from seedream_server.config import load_settings
from seedream_server.http import create_app
from seedream_server.sse import SSEDecoder, SSEEvent
from support import GENERATIONS, MODEL, assert_error, body, decode_b64, eventually, running
from upstream_faults import (
    ARK,
    OPENAI,
    OPENAI_EDITS,
    Cut,
    Fail,
    FaultServer,
    Garbage,
    Hang,
    Succeed,
    invalid_parameter,
    refused_port,
    secrets_absent,
)

KEY_A = "sk-upstream-AAAA-5b0d6c1e9f"
KEY_B = "sk-upstream-BBBB-7e2a4f8c3d"
KEYS = (KEY_A, KEY_B)
UPSTREAM_ARK = "doubao-seedream-4-0-250828-upstream"
OPENAI_MODEL = "flux2-klein"
UPSTREAM_OPENAI = "black-forest-labs/FLUX.2-klein-4B"
GROUP = {"sequential_image_generation": "auto", "sequential_image_generation_options": {"max_images": 4}}


# --- configuration: a TOML file with the names ----------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(path: Path, *models: dict[str, Any]) -> Path:
    lines: list[str] = []
    for model in models:
        lines.append("[[models]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in model.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def ark_model(base_url: str, **options: Any) -> dict[str, Any]:
    return {
        "name": MODEL,
        "engine": "ark",
        "base_url": base_url,
        "api_keys": [KEY_A],
        "upstream_model": UPSTREAM_ARK,
        "timeout_s": 10,
        "max_retries": 2,
        **options,
    }


def openai_model(*base_urls: str, **options: Any) -> dict[str, Any]:
    return {
        "name": OPENAI_MODEL,
        "engine": "openai",
        "base_urls": list(base_urls),
        "api_keys": [KEY_A],
        "upstream_model": UPSTREAM_OPENAI,
        "max_references": 4,
        "timeout_s": 10,
        "max_retries": 2,
        **options,
    }


def relay_app(tmp_path: Path, *models: dict[str, Any]) -> FastAPI:
    config = write_config(tmp_path / "seedream.toml", *models)
    settings = load_settings(config, overrides={"data_dir": str(tmp_path / "data"), "auth": False}, environ={})
    return create_app(settings)


@dataclass(frozen=True)
class Relay:
    """One engine kind as the parametrized tests see it: its config, its upstream route, its model name."""

    kind: str
    route: str
    model: str

    def config(self, fault: FaultServer, **options: Any) -> dict[str, Any]:
        if self.kind == "ark":
            return ark_model(fault.ark_base, **options)
        return openai_model(fault.openai_base, **options)


RELAYS = [Relay("ark", ARK, MODEL), Relay("openai", OPENAI, OPENAI_MODEL)]


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every log line of every test (DEBUG and up) is free of upstream keys."""
    caplog.set_level(logging.DEBUG, logger="seedream_server")
    yield
    secrets_absent([caplog.text, *(r.getMessage() for r in caplog.records)], KEYS)


def upstream_failure(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A 502/503/504-class Ark envelope whose message says the upstream failed, and holds no key."""
    assert response.status_code in (statuses or (502, 503, 504)), response.text
    payload = response.json()
    error = payload["error"]
    assert "upstream" in error["message"].lower(), error
    assert error["message"].endswith(f"Request id: {response.headers['x-request-id']}")
    secrets_absent([response.text], KEYS)
    return dict(error)


def ok_images(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    payload = response.json()
    images = [item for item in payload["data"] if "error" not in item]
    assert len(images) == count, payload
    for item in images:
        decode_b64(item["b64_json"])
    secrets_absent([response.text], KEYS)
    return list(payload["data"])


async def stream_events(client: httpx.AsyncClient, payload: dict[str, Any]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    async with client.stream("POST", GENERATIONS, json=payload) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_text():
            events += decoder.feed(chunk)
    return events + list(decoder.close())


# --- the fault server itself (cheap checks that the tool tells the truth) ---------------------------


def test_fault_server_scripts_records_and_cuts(fault: FaultServer) -> None:
    fault.script(ARK, Fail(429, "RateLimitExceeded", retry_after="1"), Cut(after=1))
    fault.key_status[KEY_B] = 401
    url = f"{fault.ark_base}/images/generations"
    first = httpx.post(url, json={"model": "m", "prompt": "p"}, headers={"Authorization": f"Bearer {KEY_A}"})
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("POST", url, json={"stream": True, **GROUP}) as r:
        r.read()
    refused = httpx.post(url, json={}, headers={"Authorization": f"Bearer {KEY_B}"})
    assert refused.status_code == 401
    good = httpx.post(url, json={"size": "1280x720", "response_format": "b64_json"})
    assert decode_b64(good.json()["data"][0]["b64_json"]).size == (1280, 720)
    assert [c.answer for c in fault.calls] == ["Fail(429)", "Cut(4) stream", "key 401", "Succeed(1)"]
    assert fault.keys() == [KEY_A, None, KEY_B, None]
    assert fault.calls[1].images == 1
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{refused_port()}/v1/images/generations", json={})


# --- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_429_with_retry_after_then_success(tmp_path: Path, fault: FaultServer, relay: Relay) -> None:
    fault.script(relay.route, Fail(429, "RateLimitExceeded", "Too many requests upstream.", retry_after="1"))
    async with running(relay_app(tmp_path, relay.config(fault, api_keys=[KEY_A, KEY_B]))) as client:
        response = await client.post(GENERATIONS, json=body(model=relay.model))
    ok_images(response, 1)
    first, second = fault.calls_to(relay.route)
    assert [first.answer[:9], second.answer[:7]] == ["Fail(429)", "Succeed"]
    assert first.answered is not None
    # Retry-After: 1 is honoured; a lower bound, which a slow machine cannot break
    assert second.arrived - first.answered >= 0.95
    assert second.fields["prompt"] == first.fields["prompt"]
    assert second.key != first.key  # a key that got 429 is cooled down: the retry takes the other one


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_500_then_success(
    tmp_path: Path, fault: FaultServer, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    fault.script(relay.route, Fail(500))
    async with running(relay_app(tmp_path, relay.config(fault))) as client:
        response = await client.post(GENERATIONS, json=body(model=relay.model))
    ok_images(response, 1)
    failed, answered = fault.calls_to(relay.route)
    assert [failed.answer, answered.answer.split("(")[0]] == ["Fail(500)", "Succeed"]
    # the upstream's id of the call that delivered goes into our log line
    assert f"upstream_request_id={answered.request_id}" in caplog.text


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_5xx_every_time_is_a_clear_upstream_error_after_max_retries(
    tmp_path: Path, fault: FaultServer, relay: Relay
) -> None:
    fault.default = Fail(503, "ServiceUnavailable", "upstream is overloaded")
    async with running(relay_app(tmp_path, relay.config(fault, max_retries=1))) as client:
        response = await client.post(GENERATIONS, json=body(model=relay.model))
    upstream_failure(response)
    assert len(fault.calls_to(relay.route)) == 2  # the call and max_retries = 1 retry


async def test_an_edit_retried_after_a_5xx_sends_its_references_again(tmp_path: Path, fault: FaultServer) -> None:
    references = [data_uri(encode(solid((512, 512), color), "png"), "png") for color in ((200, 0, 0), (0, 0, 200))]
    fault.script(OPENAI_EDITS, Fail(502, "BadGateway", "replica restarting"))
    async with running(relay_app(tmp_path, openai_model(fault.openai_base))) as client:
        response = await client.post(GENERATIONS, json=body(model=OPENAI_MODEL, image=references))
    ok_images(response, 1)
    failed, answered = fault.calls_to(OPENAI_EDITS)
    assert failed.answer == "Fail(502)" and answered.answer.startswith("Succeed")
    assert len(answered.files) == 2 and answered.files == failed.files  # the multipart body is whole again
    assert all(name in ("image[]", "image") and data for name, _, data in answered.files)
    assert answered.form["model"] == UPSTREAM_OPENAI


# --- timeouts, refused connections, garbage ----------------------------------------------------------


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_slow_upstream_past_timeout_s(tmp_path: Path, fault: FaultServer, relay: Relay) -> None:
    fault.default = Hang()  # held until the test ends (fault.release)
    async with running(relay_app(tmp_path, relay.config(fault, timeout_s=1, max_retries=0))) as client:
        response = await client.post(GENERATIONS, json=body(model=relay.model))
    error = upstream_failure(response, 502, 503, 504)
    assert response.status_code == 504 and error["code"] == "UpstreamTimeout", error
    assert [c.answer for c in fault.calls_to(relay.route)] == ["Hang"]  # max_retries = 0


async def test_a_replica_that_refuses_connections_loses_its_traffic(tmp_path: Path, fault: FaultServer) -> None:
    dead = f"http://127.0.0.1:{refused_port()}/v1"
    async with running(relay_app(tmp_path, openai_model(dead, fault.openai_base))) as client:
        for _ in range(3):
            ok_images(await client.post(GENERATIONS, json=body(model=OPENAI_MODEL)), 1)
    assert len(fault.calls_to(OPENAI)) == 3  # every call ended on the live replica


async def test_a_failing_replica_is_left_out_for_a_while(tmp_path: Path) -> None:
    with FaultServer() as sick, FaultServer() as well:
        sick.default = Fail(503, "ServiceUnavailable", "replica down")
        config = openai_model(sick.openai_base, well.openai_base)
        async with running(relay_app(tmp_path, config)) as client:
            for _ in range(4):
                ok_images(await client.post(GENERATIONS, json=body(model=OPENAI_MODEL)), 1)
        assert len(sick.calls_to(OPENAI)) <= 1  # tried at most once, then out of rotation
        assert len(well.calls_to(OPENAI)) == 4


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_garbage_json_is_a_clear_error(tmp_path: Path, fault: FaultServer, relay: Relay) -> None:
    fault.default = Garbage()
    async with running(relay_app(tmp_path, relay.config(fault))) as client:
        response = await client.post(GENERATIONS, json=body(model=relay.model))
    error = upstream_failure(response, 502)
    assert error["code"] == "UpstreamServiceError", error
    assert 1 <= len(fault.calls_to(relay.route)) <= 3


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_upstream_cannot_be_reached_at_start_is_unready(tmp_path: Path, relay: Relay) -> None:
    port = refused_port()
    base = f"http://127.0.0.1:{port}" + ("/api/v3" if relay.kind == "ark" else "/v1")
    config = ark_model(base) if relay.kind == "ark" else openai_model(base)
    async with running(relay_app(tmp_path, config)) as client:  # start-up finished: not blocked

        async def unready() -> bool:
            response = await client.get("/readyz")
            return response.status_code == 503 and relay.model in response.json()["unready"]

        await eventually(unready, f"/readyz lists {relay.model} as unready")
        response = await client.get("/readyz")
        assert response.status_code == 503, response.text
        assert response.json()["status"] == "unready" and response.json()["unready"] == [relay.model]
        # a request is answered (a clear upstream error), not hung
        upstream_failure(await client.post(GENERATIONS, json=body(model=relay.model)))


async def test_start_up_is_not_blocked_by_an_upstream_that_never_answers(tmp_path: Path) -> None:
    """A listening socket that never accepts: connections open, no byte ever comes back. With a timeout far
    beyond the test's own bound, start-up must finish without waiting for it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        base = f"http://127.0.0.1:{silent.getsockname()[1]}/api/v3"
        app = relay_app(tmp_path, ark_model(base, timeout_s=3600))

        async def start_and_probe() -> int:
            async with running(app) as client:
                return (await client.get("/readyz")).status_code

        assert await asyncio.wait_for(start_and_probe(), timeout=120) in (200, 503)


# --- streams cut short ----------------------------------------------------------------------------


async def test_sse_cut_mid_group_keeps_delivered_images_and_ends_in_an_error_event(
    tmp_path: Path, fault: FaultServer
) -> None:
    fault.script(ARK, Cut(after=2))
    async with running(relay_app(tmp_path, ark_model(fault.ark_base))) as client:
        events = await stream_events(client, body(stream=True, **GROUP))
    kinds = [event.event for event in events]
    assert kinds[:2] == ["image_generation.partial_succeeded"] * 2, kinds
    delivered = [json.loads(event.data) for event in events[:2]]
    assert [d["image_index"] for d in delivered] == [0, 1]
    for d in delivered:
        decode_b64(d["b64_json"])
    assert "image_generation.partial_succeeded" not in kinds[2:], kinds
    assert "error" in kinds, kinds
    error = json.loads(events[kinds.index("error")].data)["error"]
    assert "upstream" in error["message"].lower(), error
    secrets_absent([event.data for event in events], KEYS)
    # images of that call were delivered: the call is not made again
    calls = fault.calls_to(ARK)
    assert len(calls) == 1 and calls[0].fields["stream"] is True


async def test_sse_cut_non_stream_client_gets_the_delivered_images(tmp_path: Path, fault: FaultServer) -> None:
    fault.script(ARK, Cut(after=2))
    async with running(relay_app(tmp_path, ark_model(fault.ark_base))) as client:
        response = await client.post(GENERATIONS, json=body(**GROUP))
    data = ok_images(response, 2)
    assert response.json()["usage"]["generated_images"] == 2
    assert all("b64_json" in item for item in data[:2])
    assert len(fault.calls_to(ARK)) == 1  # not re-requested once images were delivered


async def test_no_retry_after_one_image_was_delivered(tmp_path: Path, fault: FaultServer) -> None:
    fault.script(ARK, Cut(after=1))
    async with running(relay_app(tmp_path, ark_model(fault.ark_base, max_retries=3))) as client:
        events = await stream_events(client, body(stream=True, **GROUP))
    kinds = [event.event for event in events]
    assert kinds[0] == "image_generation.partial_succeeded" and "error" in kinds, kinds
    assert kinds.count("image_generation.partial_succeeded") == 1
    assert len(fault.calls_to(ARK)) == 1


async def test_upstream_per_image_failures_stay_per_image(tmp_path: Path, fault: FaultServer) -> None:
    fault.script(ARK, Succeed(images=3, failed={1: "OutputImageSensitiveContentDetected"}))
    async with running(relay_app(tmp_path, ark_model(fault.ark_base))) as client:
        events = await stream_events(client, body(stream=True, **GROUP))
    kinds = [event.event for event in events if event.event]
    assert kinds == [
        "image_generation.partial_succeeded",
        "image_generation.partial_failed",
        "image_generation.partial_succeeded",
        "image_generation.completed",
    ], kinds
    assert json.loads(events[1].data)["error"]["code"] == "OutputImageSensitiveContentDetected"
    assert json.loads(events[3].data)["usage"]["generated_images"] == 2


# --- upstream errors and keys ---------------------------------------------------------------------


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_upstream_400_keeps_its_code_and_param(tmp_path: Path, fault: FaultServer, relay: Relay) -> None:
    fault.script(relay.route, invalid_parameter("size", "The parameter `size` is not valid upstream (code 7731)."))
    async with running(relay_app(tmp_path, relay.config(fault))) as client:
        response = await client.post(GENERATIONS, json=body(model=relay.model))
    error = assert_error(response, 400, "InvalidParameter", "size")
    assert "code 7731" in error["message"]  # the upstream message is kept
    secrets_absent([response.text], KEYS)
    assert len(fault.calls_to(relay.route)) == 1  # a 400 is not retried


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_401_on_one_pooled_key_moves_to_the_next_and_cools_it_down(
    tmp_path: Path, fault: FaultServer, relay: Relay
) -> None:
    fault.key_status[KEY_A] = 401
    async with running(relay_app(tmp_path, relay.config(fault, api_keys=[KEY_A, KEY_B]))) as client:
        for _ in range(4):
            ok_images(await client.post(GENERATIONS, json=body(model=relay.model)), 1)
    keys = fault.keys(relay.route)
    assert keys.count(KEY_A) == 1, keys  # refused once, then left alone
    assert keys.count(KEY_B) == 4, keys
    if keys[0] == KEY_A:
        assert keys[1] == KEY_B  # the same request, retried with the next key
    assert all(c.headers["authorization"] == f"Bearer {c.key}" for c in fault.calls)


@pytest.mark.parametrize("relay", RELAYS, ids=lambda r: r.kind)
async def test_every_key_refused_is_an_upstream_auth_error_without_keys(
    tmp_path: Path, fault: FaultServer, relay: Relay
) -> None:
    fault.key_status.update({KEY_A: 401, KEY_B: 403})
    async with running(relay_app(tmp_path, relay.config(fault, api_keys=[KEY_A, KEY_B]))) as client:
        response = await client.post(GENERATIONS, json=body(model=relay.model))
    upstream_failure(response, 502, 503)
    assert set(fault.keys(relay.route)) <= {KEY_A, KEY_B}


# --- what ark forwards ----------------------------------------------------------------------------


async def test_ark_forwards_unknown_fields_unchanged(tmp_path: Path, fault: FaultServer) -> None:
    extra = {
        "tools": [{"type": "web_search"}],
        "output_format": "png",
        "optimize_prompt_options": {"mode": "standard", "thinking": "enabled"},
        "a_field_from_next_year": {"nested": [1, 2, 3]},
        "watermark": False,
        "seed": 42,
    }
    # a model whose profile (Seedream 5.0 lite) takes tools and png; served under its own id
    lite = "doubao-seedream-5-0-260128"
    config = ark_model(fault.ark_base, name=lite, upstream_model=lite)
    async with running(relay_app(tmp_path, config)) as client:
        response = await client.post(GENERATIONS, json=body(model=lite, size="2K", **extra))
    assert response.status_code == 200, response.text
    (call,) = fault.calls_to(ARK)
    sent = call.fields
    assert sent["model"] == lite
    for name, value in extra.items():
        assert sent[name] == value, (name, sent)
    assert sent["prompt"] == body()["prompt"] and sent["size"] == "2K"
    assert call.key == KEY_A


async def test_openai_sends_the_upstream_model_and_one_call_per_image(tmp_path: Path, fault: FaultServer) -> None:
    async with running(relay_app(tmp_path, openai_model(fault.openai_base))) as client:
        response = await client.post(GENERATIONS, json=body(model=OPENAI_MODEL, seed=7, **GROUP))
    data = response.json()["data"]
    calls = fault.calls_to(OPENAI) + fault.calls_to("openai-edits")
    assert response.status_code == 200 and len(calls) == len(data) >= 1, response.text
    assert all(c.fields["model"] == UPSTREAM_OPENAI for c in calls)
    assert all(c.fields.get("response_format") == "b64_json" for c in calls)


# --- the real process: keys from the environment, the log file ------------------------------------


def test_served_relay_takes_keys_from_env_and_never_logs_them(tmp_path: Path, fault: FaultServer) -> None:
    fault.key_status[KEY_A] = 401
    fault.script(ARK, Fail(500))
    model = ark_model(fault.ark_base, api_keys_env="SEEDREAM_TEST_UPSTREAM_KEYS")
    del model["api_keys"]
    config = write_config(tmp_path / "relay.toml", model)
    env = {"SEEDREAM_TEST_UPSTREAM_KEYS": f"{KEY_A},{KEY_B}"}
    server = start_server(tmp_path, "--no-auth", "--config", str(config), "--log-level", "debug", env=env)
    try:
        responses = [httpx.post(f"{server.url}{GENERATIONS}", json=body(), timeout=60) for _ in range(2)]
        fault.key_status[KEY_B] = 401
        responses.append(httpx.post(f"{server.url}{GENERATIONS}", json=body(), timeout=60))
    finally:
        stop_server(server)
    for response in responses[:2]:
        ok_images(response, 1)
    upstream_failure(responses[2], 502, 503)
    assert set(fault.keys(ARK)) == {KEY_A, KEY_B}
    secrets_absent([server.log.read_text(), *(r.text for r in responses)], KEYS)
