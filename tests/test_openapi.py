"""The OpenAPI document tells the truth (issue 10, item 7), each point checked against what the server does:
the bearer scheme and ``security`` on the API routes (none without auth), 401 and 503 documented where they
happen, ``/metrics`` as Prometheus text, non-empty ``prompt``/``model``, no ``mask`` in the edits form (and
its 400), integral floats for integer fields, the event stream's events; and, from items 4 and 6, a lone
UTF-16 surrogate is a 400 naming its field and a 405 keeps its ``Allow`` header in the Ark envelope.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from fastapi import FastAPI

from seedream_server.accounts import AccountStore
from seedream_server.config import Settings, load_settings
from seedream_server.http import create_app
from seedream_server.http.middleware import API_PREFIXES, OPEN_WHILE_DRAINING
from seedream_server.http.openapi import SECURITY_SCHEME
from support import (
    GENERATIONS,
    MODEL,
    OPENAI_GENERATIONS,
    PATHS,
    assert_error,
    body,
    decode_b64,
    running,
    sse_events,
)

EDITS = "/v1/images/edits"
PNG_URI = (  # 1x1 red PNG
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(path, method, operation)`` for every operation in the document."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def documented(spec: dict[str, Any], path: str, method: str) -> set[int]:
    return {int(status) for status in spec["paths"][path][method]["responses"]}


async def call(
    client: httpx.AsyncClient, path: str, method: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """One request to an operation, with a valid body where it takes one (the path parameter made up)."""
    url = path.replace("{name}", "nope.jpeg")
    if path == EDITS:
        return await client.post(url, data={"model": MODEL, "prompt": "x"}, files={"image[]": b"x"}, headers=headers)
    if method == "post":
        return await client.post(url, json=body(), headers=headers)
    return await client.request(method.upper(), url, headers=headers)


def settings_with(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(overrides={"data_dir": str(tmp_path / "data"), **overrides}, environ={})


@pytest.fixture
def key(tmp_path: Path) -> str:
    store = AccountStore.open(tmp_path / "data")
    try:
        return store.create_key("openapi")[1]
    finally:
        store.close()


@pytest.fixture
async def keyed(tmp_path: Path, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app that requires keys (the key is ``key``)."""
    async with running(create_app(settings_with(tmp_path, auth=True, auth_failure_limit=1000))) as client:
        yield client


# --- security -------------------------------------------------------------------------------------


async def test_bearer_scheme_and_security_on_every_api_route(keyed: httpx.AsyncClient) -> None:
    spec = (await keyed.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"] == {
        SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description": "An API key (sk-...)."}
    }
    api = [(path, method) for path, method, _ in operations(spec) if path.startswith(API_PREFIXES)]
    assert {path for path, _ in api} == {*PATHS, EDITS, "/v1/models", "/api/v3/models"}
    for path, method, operation in operations(spec):
        if path.startswith(API_PREFIXES):
            assert operation["security"] == [{SECURITY_SCHEME: []}], (method, path)
        else:
            assert "security" not in operation, (method, path)


async def test_no_security_documented_when_auth_is_off(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "securitySchemes" not in spec["components"]
    for path, method, operation in operations(spec):
        assert "security" not in operation, (method, path)
        assert "401" not in operation["responses"], (method, path)


async def test_401_happens_and_is_documented_on_every_api_route(keyed: httpx.AsyncClient, key: str) -> None:
    spec = (await keyed.get("/openapi.json")).json()
    for path, method, _ in operations(spec):
        if not path.startswith(API_PREFIXES):
            continue
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
            response = await call(keyed, path, method, headers)
            assert_error(response, 401, "AuthenticationError")
            assert 401 in documented(spec, path, method), (method, path)
        accepted = await call(keyed, path, method, {"Authorization": f"Bearer {key}"})
        assert accepted.status_code in documented(spec, path, method) - {401}, (method, path, accepted.text)


async def test_401_of_the_metrics_token_is_documented(tmp_path: Path) -> None:
    async with running(create_app(settings_with(tmp_path, auth=False, metrics_token="m" * 16))) as client:
        spec = (await client.get("/openapi.json")).json()
        assert_error(await client.get("/metrics"), 401, "AuthenticationError")
        assert documented(spec, "/metrics", "get") == {200, 401}
        assert (await client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 16})).status_code == 200


async def test_503_while_draining_happens_where_documented(app: FastAPI, client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    app.state.begin_drain()
    for path, method, _ in operations(spec):
        response = await call(client, path, method)
        if path in OPEN_WHILE_DRAINING:
            assert response.status_code != 503 or path == "/readyz", (method, path)
            continue
        assert_error(response, 503, "ServiceUnavailable")
        assert response.headers["retry-after"] == "5"
        assert 503 in documented(spec, path, method), (method, path)
    # readiness says so with its own body, as documented
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    assert spec["paths"]["/readyz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }


async def test_every_api_route_documents_401_429_and_503_with_the_ark_envelope(keyed: httpx.AsyncClient) -> None:
    spec = (await keyed.get("/openapi.json")).json()
    for path, _, operation in operations(spec):
        if not path.startswith(API_PREFIXES):
            continue
        for status in ("401", "429", "503"):
            response = operation["responses"][status]
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
            assert response["headers"]["X-Request-Id"]["required"] is True
        assert "Retry-After" in operation["responses"]["429"]["headers"]


# --- media types --------------------------------------------------------------------------------------


async def test_metrics_documented_as_prometheus_text(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    response = await client.get("/metrics")
    assert list(content) == [response.headers["content-type"]]  # exactly what the server sends
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert content[response.headers["content-type"]]["schema"] == {"type": "string"}
    assert "# TYPE" in response.text


async def test_files_documented_as_images_not_json(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    content = spec["paths"]["/files/{name}"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"image/jpeg", "image/png", "image/webp"}
    made = await client.post(GENERATIONS, json=body(response_format="url", output_format="png"))
    link = httpx.URL(made.json()["data"][0]["url"])
    image = await client.get(link.raw_path.decode())
    assert image.status_code == 200
    assert image.headers["content-type"] in content


async def test_stream_events_match_the_documented_event_schema(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    event_schema = spec["paths"][GENERATIONS]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    validator = jsonschema_rs.validator_for({**event_schema, "components": spec["components"]})
    response = await client.post(GENERATIONS, json=body(stream=True, n=2))
    events = sse_events(response.text)
    assert [event for event, _ in events] == [
        "image_generation.partial_succeeded",
        "image_generation.partial_succeeded",
        "image_generation.completed",
        None,
    ]
    for event, data in events:
        validator.validate({"event": event or "message", "data": data})  # an unnamed event's type is message
        if data != "[DONE]":  # data is the named component, as JSON
            branch = next(b for b in event_schema["oneOf"] if b["properties"]["event"]["const"] == event)
            component = branch["properties"]["data"]["contentSchema"]["$ref"].rsplit("/", 1)[1]
            item = jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{component}", **spec})
            item.validate(json.loads(data))
    with pytest.raises(jsonschema_rs.ValidationError):
        validator.validate({"event": "image_generation.completed", "data": "[DONE]"})


# --- request fields -----------------------------------------------------------------------------------


async def test_prompt_and_model_documented_non_empty_and_refused_empty(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    json_fields = spec["components"]["schemas"]["ImageGenerationRequest"]["properties"]
    form_fields = spec["paths"][EDITS]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    for fields in (json_fields, form_fields):
        for name in ("prompt", "model"):
            assert (fields[name]["type"], fields[name]["minLength"]) == ("string", 1), name
    for path in PATHS:
        assert_error(await client.post(path, json=body(prompt="")), 400, "InvalidParameter", param="prompt")
        assert (await client.post(path, json=body(model=""))).status_code in documented(spec, path, "post") - {200}


async def test_mask_is_not_documented_and_is_refused(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    form = spec["paths"][EDITS]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "mask" not in form["properties"]
    assert "mask" not in json.dumps(spec)
    fields = {"model": MODEL, "prompt": "x"}
    as_file = await client.post(EDITS, data=fields, files=[("image[]", b"x"), ("mask", b"x")])
    assert_error(as_file, 400, "InvalidParameter", param="mask")
    as_text = await client.post(EDITS, data={**fields, "mask": "x"}, files={"image[]": b"x"})
    assert_error(as_text, 400, "InvalidParameter", param="mask")


@pytest.mark.parametrize("path", PATHS)
async def test_integral_float_integers_are_accepted(client: httpx.AsyncClient, path: str) -> None:
    spec = (await client.get("/openapi.json")).json()
    seed = spec["components"]["schemas"]["ImageGenerationRequest"]["properties"]["seed"]
    assert {"type": "integer", "minimum": -1, "maximum": 2147483647} in [
        {k: v for k, v in s.items() if k != "title"} for s in seed["anyOf"]
    ]
    ints = {"seed": 3.0, "n": 2.0, "sequential_image_generation_options": {"max_images": 1.0}}
    response = await client.post(path, json=body(**ints))
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    # the same request with the integer seed gives the same images
    again = await client.post(path, json=body(**{**ints, "seed": 3}))
    pixels = [decode_b64(i["b64_json"]).tobytes() for i in response.json()["data"]]
    assert [decode_b64(i["b64_json"]).tobytes() for i in again.json()["data"]] == pixels


@pytest.mark.parametrize("seed", [3.5, "3", True, -1.5, 2147483648.0])
async def test_non_integral_seeds_are_400s_naming_seed(client: httpx.AsyncClient, seed: Any) -> None:
    for path in PATHS:
        assert_error(await client.post(path, json=body(seed=seed)), 400, "InvalidParameter", param="seed")


# --- lone surrogates (item 4) ---------------------------------------------------------------------


def raw_json(**fields: Any) -> bytes:
    """A request body as JSON text in which ``"\\ud800"`` stays the escape a client wrote (``json=`` refuses it)."""
    return json.dumps(body(**fields)).replace("LONE", "\\ud800").encode()


@pytest.mark.parametrize(
    ("fields", "param", "named"),
    [
        ({"model": "LONE"}, "model", "model"),
        ({"prompt": "LONE"}, "prompt", "prompt"),
        ({"prompt": "a fox LONE in the snow"}, "prompt", "prompt"),
        ({"size": "LONE"}, "size", "size"),
        ({"user": "LONE"}, "user", "user"),
        ({"quality": "LONE"}, "quality", "quality"),
        ({"style": "LONE"}, "style", "style"),
        ({"image": "LONE"}, "image", "image"),
        ({"image": [PNG_URI, "LONE"]}, "image", "image[1]"),
        ({"image": [PNG_URI, "data:image/png;base64,LONE"]}, "image", "image[1]"),
        ({"optimize_prompt_options": {"mode": "LONE"}}, "optimize_prompt_options.mode", "optimize_prompt_options.mode"),
        ({"sequential_image_generation": "LONE"}, "sequential_image_generation", "sequential_image_generation"),
        ({"response_format": "LONE"}, "response_format", "response_format"),
    ],
)
async def test_lone_surrogate_is_a_400_naming_the_field(
    client: httpx.AsyncClient, fields: dict[str, Any], param: str, named: str
) -> None:
    content = raw_json(**fields)
    assert b"\\ud800" in content
    for path in PATHS:
        response = await client.post(path, content=content, headers={"content-type": "application/json"})
        error = assert_error(response, 400, "InvalidParameter", param=param)
        assert f"`{named}`" in error["message"]


async def test_lone_surrogate_in_an_unknown_field_is_a_400(client: httpx.AsyncClient) -> None:
    content = json.dumps({**body(), "LONE": "LONE"}).replace("LONE", "\\ud800").encode()
    response = await client.post(GENERATIONS, content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, "InvalidParameter")


# --- 405 (item 6) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", OPENAI_GENERATIONS, "POST"),
        ("PUT", GENERATIONS, "POST"),
        ("GET", EDITS, "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/healthz", "GET"),
    ],
)
async def test_405_keeps_allow_in_the_ark_envelope(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert_error(response, 405, "InvalidRequest")
    assert response.headers["allow"] == allow
