"""What the API tests share: the model and paths, one request body, the error envelope, SSE, and waits.

Importable (not a conftest): ``from support import MODEL, body, assert_error, ...``.

* ``body(**fields)`` is the one small valid request (1280x720, inline ``b64_json``); a test names the
  fields it depends on (``size="1K"``, ``response_format="url"``, ``seed=11``) at the call.
* ``running(app)`` is an in-process client with the app's lifespan around it.
* ``assert_error`` checks the whole Ark error envelope, with the request id in the message and in
  ``X-Request-Id``.
* Event streams are read with the package's own parser (:mod:`seedream_server.sse`), the one that
  ``seedream generate`` uses: ``sse_events`` for a whole body, ``iter_sse`` for a live response.
* ``wait_until`` / ``eventually`` wait for a condition (a server-side signal, a file, a metric); the
  bound is a safety net against a hang, never the thing a test asserts.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from PIL import Image

from seedream_server.config import DEFAULT_MODEL
from seedream_server.sse import SSEDecoder, SSEEvent, parse_events

__all__ = [
    "GENERATIONS",
    "MODEL",
    "OPENAI_GENERATIONS",
    "PATHS",
    "PROMPT",
    "SEED_PROMPT",
    "SSEEvent",
    "assert_error",
    "body",
    "decode",
    "decode_b64",
    "eventually",
    "iter_sse",
    "metric",
    "running",
    "served_metric",
    "sse_events",
    "wait_until",
]

T = TypeVar("T")

MODEL = DEFAULT_MODEL  # "doubao-seedream-4-0-250828", served by the preview engine by default
GENERATIONS = "/api/v3/images/generations"
OPENAI_GENERATIONS = "/v1/images/generations"
PATHS = [GENERATIONS, OPENAI_GENERATIONS]
PROMPT = "a red fox in the snow"
#: the group example of the Seedream documentation: three images, morning, noon and evening
SEED_PROMPT = "生成3张女孩和奶牛玩偶在游乐园开心地坐过山车的图片，涵盖早晨、中午、晚上"

_UNSET: Any = object()


def body(**fields: Any) -> dict[str, Any]:
    """A small valid request (1280x720, ``b64_json``) with ``fields`` replacing or adding keys."""
    return {"model": MODEL, "prompt": PROMPT, "size": "1280x720", "response_format": "b64_json", **fields}


def assert_error(response: httpx.Response, status: int, code: str, param: Any = _UNSET) -> dict[str, Any]:
    """The Ark envelope: JSON ``{"error": {...}}`` with ``code``, a ``type`` and (when given) ``param``;
    its message ends in ``Request id: <id>``, the same id as ``X-Request-Id``; no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    payload = response.json()
    assert set(payload) == {"error"}
    error = payload["error"]
    assert error["code"] == code, error
    assert error["message"].endswith(f"Request id: {request_id}")
    assert isinstance(error["type"], str) and error["type"]
    if param is not _UNSET:
        assert error.get("param") == param
    assert "Traceback" not in response.text
    return dict(error)


def decode(data: bytes) -> Image.Image:
    """An image from encoded bytes, fully loaded."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def decode_b64(b64: str) -> Image.Image:
    return decode(base64.b64decode(b64, validate=True))


@asynccontextmanager
async def running(app: FastAPI, *, raise_app_exceptions: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client on ``http://127.0.0.1:8000`` with the app's lifespan around it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000", timeout=120) as client:
            yield client


# --- server-sent events -------------------------------------------------------------------------


def sse_events(text: str) -> list[SSEEvent]:
    """The events of a whole event stream: ``(event, data)`` pairs, ``event`` None when unnamed."""
    return parse_events(text)


def iter_sse(response: httpx.Response) -> Iterator[SSEEvent]:
    """The events of a streamed response as they come off the socket."""
    decoder = SSEDecoder()
    for chunk in response.iter_text():
        yield from decoder.feed(chunk)
    yield from decoder.close()


# --- waiting for something to happen ------------------------------------------------------------


def wait_until(predicate: Callable[[], T], what: str, within: float = 60.0, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    ``within`` only keeps a broken test from hanging; reaching it fails with ``what`` never happened.
    """
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(interval)


async def eventually(
    predicate: Callable[[], T | Awaitable[T]], what: str, within: float = 60.0, interval: float = 0.01
) -> T:
    """:func:`wait_until` for the event loop: ``predicate`` may be a plain or an async function."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(interval)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0.0 when the series is not there yet)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    series = re.escape(f"{name}{{{wanted}}}" if labels else name)
    match = re.search(rf"^{series} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def served_metric(base_url: str, name: str, **labels: str) -> float:
    """:func:`metric` read from a running server's ``/metrics``."""
    return metric(httpx.get(f"{base_url}/metrics", timeout=30).text, name, **labels)
