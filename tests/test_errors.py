"""Error messages as clients read them (issue 14): a sentence ends before ``Request id``; an ``image`` that is
neither a URL nor a data URI says what a reference must look like and echoes at most a short prefix; an
empty ``model`` is ``MissingParameter``."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from seedream_server.errors import InvalidParameter, NotFoundError
from support import GENERATIONS, assert_error, body

SHAPE = "a reference is an http(s) URL or data:image/<format>;base64,<data>"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("image[0]: unsupported scheme 'ftp'", "image[0]: unsupported scheme 'ftp'. Request id: r1"),
        ("Method Not Allowed", "Method Not Allowed. Request id: r1"),
        ("The model does not exist.", "The model does not exist. Request id: r1"),
        ("Is it?", "Is it? Request id: r1"),
        ("图片无效。", "图片无效。 Request id: r1"),
        ("trailing space ", "trailing space. Request id: r1"),
    ],
)
def test_a_sentence_ends_before_the_request_id(message: str, expected: str) -> None:
    assert InvalidParameter(message).envelope("r1")["error"]["message"] == expected  # type: ignore[index]
    assert NotFoundError(message).envelope()["error"]["message"] == message  # type: ignore[index]


async def test_405_and_reference_messages_on_the_wire(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get(GENERATIONS), 405, "InvalidRequest")
    assert error["message"].startswith("Method Not Allowed. Request id: ")
    error = assert_error(await client.post(GENERATIONS, json=body(image="ftp://x/a.png")), 400, "InvalidParameter")
    assert error["message"].startswith(f"image[0]: unsupported scheme 'ftp'; {SHAPE}. Request id: ")


def _png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), "red").save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("image", "says"),
    [
        (_png_b64() * 20, "looks like bare base64"),
        ("photo.png", "looks like a file name"),
        ("C:/Users/me/Pictures/holiday photo.JPG", "looks like a file name"),
        ("/home/me/" + "x" * 4000 + ".webp", "looks like a file name"),
        ("just some words " * 300, "is not a URL"),
    ],
)
async def test_an_image_that_is_not_a_reference(client: httpx.AsyncClient, image: str, says: str) -> None:
    error = assert_error(await client.post(GENERATIONS, json=body(image=[image])), 400, "InvalidParameter", "image")
    message = error["message"]
    assert says in message and SHAPE in message
    assert repr(image[:24] + "…") in message or repr(image) in message
    assert len(message) < 400  # never kilobytes of the input back


async def test_an_empty_model_is_missing(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.post(GENERATIONS, json=body(model="")), 400, "MissingParameter", "model")
    assert "model" in error["message"]
