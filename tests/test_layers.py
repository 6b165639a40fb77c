"""Layer decomposition (issue 12): a base image plus transparent PNG layers, each item with its z_index,
bounding box, name and description; through the preview engine (JSON in process, the Ark SDK on a real
server), the tiny Qwen-Image-Layered pipeline, and the pure box arithmetic delivery uses."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import LiveServer
from seedream_server.config import load_settings
from seedream_server.http import create_app
from seedream_server.postprocess import resize_box
from seedream_server.provenance import read_provenance
from support import GENERATIONS, assert_error, running

PRO = "doubao-seedream-5-0-pro-260628"
V40 = "doubao-seedream-4-0-250828"
PROMPT = "split this poster into layers\nsecond line"


def poster(size: tuple[int, int] = (96, 64)) -> str:
    """A data URI of a PNG with three flat colours (a red field, a blue band, a green square)."""
    image = Image.new("RGB", size, (220, 30, 30))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, size[1] * 2 // 3, size[0], size[1]), fill=(20, 40, 200))
    draw.rectangle((10, 10, 30, 30), fill=(30, 200, 60))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pro_body(**fields: Any) -> dict[str, Any]:
    return {
        "model": PRO,
        "prompt": PROMPT,
        "size": "1024x1024",
        "layer_decomposition": True,
        "response_format": "b64_json",
        "watermark": False,
        **fields,
    }


def check_items(data: list[dict[str, Any]], payloads: list[bytes], width: int, height: int) -> list[Image.Image]:
    """Every item as the issue says: z order, PNG RGBA of the canvas size, boxes inside the canvas and around
    the layer's visible pixels, names and descriptions, provenance; returns the decoded images."""
    assert 2 <= len(data) <= 17
    assert [item["z_index"] for item in data] == list(range(len(data)))
    images = []
    assert {"bounding_box", "name", "description"}.isdisjoint(data[0])  # the base: only its z_index, as Ark
    for item, payload in zip(data, payloads, strict=True):
        assert item["output_format"] == "png" and item["size"] == f"{width}x{height}"
        if item["z_index"] > 0:
            assert item["name"] and item["description"]
            x0, y0, x1, y1 = item["bounding_box"]["absolute"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, item["bounding_box"]
            # Ark's normalized boxes: integers from 0 to 1000
            expected = [round(x0 * 1000 / width), round(y0 * 1000 / height), round(x1 * 1000 / width)]
            assert item["bounding_box"]["normalized"] == [*expected, round(y1 * 1000 / height)]
        assert payload.startswith(b"\x89PNG\r\n\x1a\n")
        label = read_provenance(payload)
        assert label["model"] == PRO and label["Label"] == "1"
        image = Image.open(io.BytesIO(payload))
        image.load()
        assert image.mode == "RGBA" and image.size == (width, height)
        alpha = image.getchannel("A")
        if item["z_index"] > 0:  # a layer: transparent outside its region, opaque inside, boxed by it
            low, high = alpha.getextrema()  # type: ignore[misc]
            assert (low, high) == (0, 255)
            assert alpha.getbbox() == (x0, y0, x1, y1)
        else:
            assert alpha.getextrema() == (255, 255)  # type: ignore[comparison-overlap]  # the base is opaque
        images.append(image)
    return images


def composite(layers: list[Image.Image]) -> Image.Image:
    out = Image.new("RGBA", layers[0].size, (0, 0, 0, 0))
    for layer in layers:
        out.alpha_composite(layer)
    return out


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and bool(np.array_equal(np.asarray(a.convert("RGBA")), np.asarray(b.convert("RGBA"))))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "auth": False}, environ={})
    async with running(create_app(settings)) as c:
        yield c


# --- the preview engine, JSON in process ------------------------------------------------------------


async def test_preview_layers_cut_the_reference_into_regions(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATIONS, json=pro_body(image=poster()))
    assert response.status_code == 200, response.text
    payload = response.json()
    data = payload["data"]
    images = check_items(data, [base64.b64decode(item["b64_json"]) for item in data], 1024, 1024)
    assert len(data) == 5  # the base and 4 colour regions (the poster's three colours and the preview label)
    assert payload["usage"]["generated_images"] == len(data)
    # the layers, stacked in z order, give back the base exactly; the largest region is at the bottom
    assert same_pixels(composite(images[1:]), images[0])
    areas = [int(np.count_nonzero(np.asarray(image.getchannel("A")))) for image in images[1:]]
    assert areas == sorted(areas, reverse=True)
    assert data[1]["name"] == "region 1 of 4 (placeholder)"
    assert "reference image" in data[1]["description"] and "not a real decomposition" in data[1]["description"]


async def test_preview_layers_from_a_prompt_alone_as_links(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATIONS, json=pro_body(response_format="url", output_format="jpeg"))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    payloads = []
    for item in data:
        fetched = await client.get(item["url"])
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert item["url"].split("?")[0].endswith(".png")  # PNG whatever output_format asked
        payloads.append(fetched.content)
    images = check_items(data, payloads, 1024, 1024)
    assert 2 <= len(images) <= 5
    assert "preview picture" in data[1]["description"]  # the layers say what they cut up


async def test_the_visible_mark_is_on_the_base_only(client: httpx.AsyncClient) -> None:
    marked = (await client.post(GENERATIONS, json=pro_body(image=poster(), watermark=True))).json()["data"]
    plain = (await client.post(GENERATIONS, json=pro_body(image=poster()))).json()["data"]
    assert len(marked) == len(plain)
    for z, (a, b) in enumerate(zip(marked, plain, strict=True)):
        label = read_provenance(base64.b64decode(a["b64_json"]))
        assert label["watermarked"] == str(z == 0)
        pixels_a, pixels_b = (Image.open(io.BytesIO(base64.b64decode(x["b64_json"]))) for x in (a, b))
        assert same_pixels(pixels_a, pixels_b) is (z != 0)


async def test_layer_decomposition_is_refused_by_the_4_0_profile(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATIONS, json=pro_body(model=V40))
    error = assert_error(response, 400, "InvalidParameter", "layer_decomposition")
    assert V40 in error["message"]


# --- the Ark SDK against a real server ------------------------------------------------------------------


def test_ark_sdk_layer_decomposition(live_server: LiveServer) -> None:
    from volcenginesdkarkruntime import Ark

    with Ark(base_url=f"{live_server.url}/api/v3", api_key="test", timeout=60, max_retries=0) as ark:
        response = ark.images.generate(
            model=PRO,
            prompt=PROMPT,
            image=poster(),
            size="1024x1024",
            response_format="b64_json",
            watermark=False,
            layer_decomposition=True,
        )
    items = response.data
    assert [item.z_index for item in items] == [0, 1, 2, 3, 4]
    assert items[0].bounding_box is None and items[0].name is None  # the base, as the SDK documents
    for item in items:
        assert item.output_format == "png"
        if item.z_index:
            assert item.name and item.description
            assert item.bounding_box is not None and item.bounding_box.absolute is not None
            x0, y0, x1, y1 = item.bounding_box.absolute
            assert 0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 1024
            assert item.bounding_box.normalized is not None and max(item.bounding_box.normalized) <= 1000
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert image.format == "PNG" and image.mode == "RGBA"
    assert response.usage.generated_images == 5


# --- box arithmetic (delivery) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("box", "source", "size", "expected"),
    [
        ((3, 4, 50, 60), (100, 100), (100, 100), (3, 4, 50, 60)),  # same size: unchanged
        ((10, 10, 20, 30), (100, 100), (200, 200), (20, 20, 40, 60)),  # scaled
        ((60, 10, 80, 20), (200, 100), (100, 100), (10, 10, 30, 20)),  # centre crop of 50 px each side
        ((0, 0, 40, 100), (200, 100), (100, 100), (0, 0, 0, 100)),  # cropped away: empty, inside the canvas
        ((0, 0, 200, 100), (200, 100), (50, 50), (0, 0, 50, 50)),  # clamped to the canvas
    ],
)
def test_resize_box_follows_the_cover_crop(
    box: tuple[int, int, int, int], source: tuple[int, int], size: tuple[int, int], expected: tuple[int, int, int, int]
) -> None:
    assert resize_box(box, source, *size) == expected


# --- the tiny Qwen-Image-Layered pipeline (diffusers engine) ------------------------------------------


@pytest.fixture(scope="module")
def layered_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config serving the tiny layered pipeline under the 5.0 pro profile (2 steps, 3 layers)."""
    pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    from tiny_layered import build_qwen_image_layered

    root = tmp_path_factory.mktemp("layered")
    model = build_qwen_image_layered(root / "tiny-layered")
    config = root / "seedream.toml"
    config.write_text(
        f'[server]\ndata_dir = "{root / "data"}"\nauth = false\n\n'
        f'[[models]]\nname = "tiny-layered"\nengine = "diffusers"\nprofile = "seedream-5.0-pro"\n'
        f'source = "{model}"\nsteps = 2\nlayers = 3\n',
        encoding="utf-8",
    )
    return config


async def test_tiny_layered_pipeline_decomposes_the_input_image(layered_config: Path) -> None:
    async with running(create_app(load_settings(layered_config, environ={}))) as client:
        body = pro_body(model="tiny-layered", image=poster(), size="1280x720", seed=3)
        response = await client.post(GENERATIONS, json=body)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        payloads = [base64.b64decode(item["b64_json"]) for item in data]
        assert len(data) == 4  # the base (the layers composited) and the 3 layers drawn
        for item, payload in zip(data, payloads, strict=True):
            assert item["output_format"] == "png" and item["size"] == "1280x720"
            if item["z_index"]:
                assert item["name"]
                x0, y0, x1, y1 = item["bounding_box"]["absolute"]
                assert 0 <= x0 <= x1 <= 1280 and 0 <= y0 <= y1 <= 720
            image = Image.open(io.BytesIO(payload))
            assert image.mode == "RGBA" and image.size == (1280, 720)
            assert read_provenance(payload)["engine"] == "diffusers"
        assert "bounding_box" not in data[0]
        assert [item["name"] for item in data[1:]] == ["layer 1", "layer 2", "layer 3"]
        # the same request and seed give the same layers
        again = (await client.post(GENERATIONS, json=body)).json()["data"]
        decoded = [Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) for item in again]
        originals = [Image.open(io.BytesIO(payload)) for payload in payloads]
        assert all(same_pixels(a, b) for a, b in zip(decoded, originals, strict=True))


async def test_tiny_layered_pipeline_refuses_what_it_cannot_do(layered_config: Path) -> None:
    async with running(create_app(load_settings(layered_config, environ={}))) as client:
        no_image = await client.post(GENERATIONS, json=pro_body(model="tiny-layered"))
        assert_error(no_image, 400, "InvalidParameter", "image")
        ordinary = await client.post(
            GENERATIONS, json=pro_body(model="tiny-layered", image=poster(), layer_decomposition=False)
        )
        assert_error(ordinary, 400, "InvalidParameter", "layer_decomposition")
