"""OpenAI ``/v1/images/edits``: multipart files mapped onto the same generation."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
from openai import BadRequestError, OpenAI
from PIL import Image

from conftest import LiveServer
from support import MODEL, assert_error


def png(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, "JPEG")
    return out.getvalue()


def test_openai_sdk_edit_with_two_references(live_server: LiveServer) -> None:
    client = OpenAI(base_url=f"{live_server.url}/v1", api_key="test")
    resp = client.images.edit(
        model=MODEL,
        image=[("a.png", png((200, 30, 30)), "image/png"), ("b.jpg", jpeg((30, 30, 200)), "image/jpeg")],
        prompt="put the two objects side by side",
        response_format="b64_json",
        size="1K",  # type: ignore[arg-type]
        extra_body={"watermark": False, "seed": 3},
    )
    assert resp.data and resp.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(resp.data[0].b64_json)))
    # the preset takes the first reference's ratio (96x64 = 3:2)
    assert image.size == (1248, 832)


def test_openai_sdk_edit_errors_name_the_field(live_server: LiveServer) -> None:
    client = OpenAI(base_url=f"{live_server.url}/v1", api_key="test", max_retries=0)
    try:
        client.images.edit(model=MODEL, image=("bad.png", b"not an image", "image/png"), prompt="x")
    except BadRequestError as exc:
        assert exc.code == "InvalidParameter"
        assert isinstance(exc.body, dict) and exc.body["param"] == "image"
    else:
        raise AssertionError("expected a 400")


async def test_edit_output_depends_on_each_reference(client: httpx.AsyncClient) -> None:
    async def post(colours: list[tuple[int, int, int]]) -> np.ndarray:
        files = [("image[]", (f"{i}.png", png(c), "image/png")) for i, c in enumerate(colours)]
        data = {
            "model": MODEL,
            "prompt": "a collage",
            "size": "1280x720",
            "response_format": "b64_json",
            "seed": "9",
            "watermark": "false",
        }
        r = await client.post("/v1/images/edits", files=files, data=data)
        assert r.status_code == 200, r.text
        raw = base64.b64decode(r.json()["data"][0]["b64_json"])
        return np.asarray(Image.open(io.BytesIO(raw)), dtype=np.int16)

    a = await post([(255, 0, 0), (0, 255, 0)])
    b = await post([(255, 0, 0), (0, 0, 255)])
    again = await post([(255, 0, 0), (0, 255, 0)])
    assert np.array_equal(a, again)
    assert np.abs(a - b).mean() > 1.0


async def test_edit_form_validation(client: httpx.AsyncClient) -> None:
    ok = [("image[]", ("a.png", png((1, 2, 3)), "image/png"))]
    cases = [
        ({"model": MODEL, "prompt": "x"}, [], "MissingParameter", "image"),
        ({"model": MODEL, "prompt": "x", "seed": "abc"}, ok, "InvalidParameter", "seed"),
        ({"model": MODEL, "prompt": "x", "watermark": "maybe"}, ok, "InvalidParameter", "watermark"),
        ({"model": MODEL, "prompt": "x", "n": "0"}, ok, "InvalidParameter", "n"),
        ({"model": MODEL}, ok, "MissingParameter", "prompt"),
        (
            {"model": MODEL, "prompt": "x"},
            [*ok, ("mask", ("m.png", png((0, 0, 0)), "image/png"))],
            "InvalidParameter",
            "mask",
        ),
        (
            {"model": MODEL, "prompt": "x"},
            [("image[]", ("a.svg", b"<svg></svg>", "image/svg+xml"))],
            "InvalidParameter",
            "image",
        ),
    ]
    for data, files, code, param in cases:
        r = await client.post("/v1/images/edits", data=data, files=files or None)
        assert_error(r, 400, code, param)


async def test_edit_group_with_flattened_options(client: httpx.AsyncClient) -> None:
    files = [("image[]", ("a.png", png((9, 99, 199)), "image/png"))]
    data = {
        "model": MODEL,
        "prompt": "生成3张图片，分别是早晨、中午、晚上",
        "size": "1280x720",
        "sequential_image_generation": "auto",
        "sequential_image_generation_options[max_images]": "2",
        "response_format": "b64_json",
    }
    r = await client.post("/v1/images/edits", data=data, files=files)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["generated_images"] == 2


async def test_playground_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    for needle in ('id="prompt"', 'id="refs"', "/api/v3/images/generations", "stream: true", "[DONE]"):
        assert needle in r.text
