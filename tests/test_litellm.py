"""LiteLLM as a real client of a live server (issue 14): OpenAI image responses carry OpenAI's ``usage`` shape
(``input_tokens``, ``input_tokens_details``, ``output_tokens``, ``total_tokens``) besides Ark's fields, so
LiteLLM's ``ImageResponse`` validates them; the Ark route keeps Ark's shape exactly.

LiteLLM 1.x has no image support in its ``volcengine/`` provider (chat, embeddings, responses and videos
only), so groups go through its ``openai/`` provider with Seedream's fields in ``extra_body``.
"""

from __future__ import annotations

import io
import os

import httpx
import pytest

from conftest import LiveServer
from support import MODEL, body, decode

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the price list from GitHub
litellm = pytest.importorskip("litellm")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydantic notes on LiteLLM's own types

OPENAI_USAGE = {"input_tokens", "input_tokens_details", "output_tokens", "total_tokens"}
ARK_USAGE = {"generated_images", "output_tokens", "total_tokens", "input_images"}


def _png(color: str) -> io.BytesIO:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), color).save(buffer, "PNG")
    buffer.seek(0)
    buffer.name = "reference.png"
    return buffer


def _fetch(url: str) -> tuple[int, int]:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200
    return decode(response.content).size


def _args(server: LiveServer) -> dict[str, str]:
    return {"model": f"openai/{MODEL}", "api_base": f"{server.url}/v1", "api_key": "test"}


def test_image_generation(live_server: LiveServer) -> None:
    response = litellm.image_generation(prompt="a red fox in snow", size="1024x1024", **_args(live_server))
    assert len(response.data) == 1
    assert _fetch(response.data[0].url) == (1024, 1024)
    usage = response.usage
    assert usage.output_tokens == usage.total_tokens == 1024 * 1024 // 256
    assert usage.input_tokens == 0
    assert dict(usage.input_tokens_details) == {"image_tokens": 0, "text_tokens": 0}


def test_image_edit(live_server: LiveServer) -> None:
    response = litellm.image_edit(
        image=_png("red"), prompt="make the square blue", size="1024x1024", **_args(live_server)
    )
    assert len(response.data) == 1
    assert _fetch(response.data[0].url) == (1024, 1024)
    assert response.usage.output_tokens == 4096
    assert dict(response.usage.input_tokens_details) == {"image_tokens": 0, "text_tokens": 0}


def test_group_through_extra_body(live_server: LiveServer) -> None:
    response = litellm.image_generation(
        prompt="a set of 3 stickers of a cat: sleeping, eating, playing",
        size="1024x1024",
        extra_body={"sequential_image_generation": "auto", "seed": 5},
        **_args(live_server),
    )
    assert len(response.data) == 3
    assert response.usage.output_tokens == 3 * 4096
    assert {_fetch(item.url) for item in response.data} == {(1024, 1024)}


async def test_async_image_generation(live_server: LiveServer) -> None:
    response = await litellm.aimage_generation(prompt="a lighthouse at dusk", size="1024x1024", **_args(live_server))
    assert len(response.data) == 1
    assert response.usage.total_tokens == 4096


def test_usage_shapes_per_route(live_server: LiveServer) -> None:
    """OpenAI routes add OpenAI's fields (streamed too); the Ark route answers exactly Ark's usage."""
    request = body(size="1024x1024", response_format="url")
    ark = httpx.post(f"{live_server.url}/api/v3/images/generations", json=request, timeout=60).json()
    assert set(ark["usage"]) == ARK_USAGE
    oai = httpx.post(f"{live_server.url}/v1/images/generations", json=request, timeout=60).json()
    assert set(oai["usage"]) == ARK_USAGE | OPENAI_USAGE
    assert oai["usage"]["input_tokens_details"] == {"image_tokens": 0, "text_tokens": 0}
    streamed = httpx.post(f"{live_server.url}/v1/images/generations", json={**request, "stream": True}, timeout=60)
    completed = next(line for line in streamed.text.splitlines() if '"image_generation.completed"' in line)
    assert '"input_tokens_details":{"image_tokens":0,"text_tokens":0}' in completed
