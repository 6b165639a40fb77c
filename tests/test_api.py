"""The generation API through the in-process app (SPEC §1, §3, §6–§8, §12 preview, §13 health/metrics).

Images are decoded and measured, never compared by bytes only: the same seed must give the same
pixels, the watermark must change the corner and nothing else, provenance must be in the delivered
bytes, and ``usage`` must follow from the delivered sizes.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image, ImageChops, ImageStat

from checks import RecordingEngine
from seedream_server.config import ModelConfig, Settings, default_models
from seedream_server.http import create_app
from seedream_server.postprocess import read_provenance
from support import MODEL, PATHS, body, decode, running, sse_events


async def generate(client: httpx.AsyncClient, path: str = PATHS[0], **fields: Any) -> dict[str, Any]:
    """A non-streaming request; links (the server's default format) unless ``response_format`` is given."""
    payload = body(**fields)
    if "response_format" not in fields:
        del payload["response_format"]
    response = await client.post(path, json=payload)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return dict(response.json())


async def image_bytes(client: httpx.AsyncClient, item: dict[str, Any]) -> bytes:
    if "b64_json" in item:
        return base64.b64decode(item["b64_json"], validate=True)
    response = await client.get(item["url"])
    assert response.status_code == 200, response.text
    return response.content


async def pixels(client: httpx.AsyncClient, **fields: Any) -> Image.Image:
    payload = await generate(client, response_format="b64_json", **fields)
    return decode(await image_bytes(client, payload["data"][0])).convert("RGB")


def max_diff(a: Image.Image, b: Image.Image) -> int:
    return max(hi for _lo, hi in ImageChops.difference(a, b).getextrema())  # type: ignore[misc]


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# --- response shape -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_url_response_shape_and_download(client: httpx.AsyncClient, path: str) -> None:
    before = int(time.time())
    payload = await generate(client, path, size="1K")
    assert set(payload) == {"model", "created", "created_at", "data", "usage"}
    assert payload["model"] == MODEL
    assert before - 1 <= payload["created"] <= int(time.time()) + 1
    assert payload["created_at"] == payload["created"]
    assert payload["usage"]["input_images"] == 0
    (item,) = payload["data"]
    assert set(item) == {"url", "size"}
    assert item["size"] == "1024x1024"
    url = urlsplit(item["url"])
    assert (url.scheme, url.netloc) == ("http", "127.0.0.1:8000")
    assert re.fullmatch(r"/files/[0-9a-f]{32}_0\.jpeg", url.path)
    assert re.fullmatch(r"expires=\d+&signature=[0-9a-f]{64}", url.query)
    response = await client.get(item["url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    image = decode(response.content)
    assert (image.format, image.size) == ("JPEG", (1024, 1024))


@pytest.mark.parametrize("path", PATHS)
async def test_b64_json_response_is_the_jpeg_itself(client: httpx.AsyncClient, path: str) -> None:
    payload = await generate(client, path, size="1280x720", response_format="b64_json")
    (item,) = payload["data"]
    assert set(item) == {"b64_json", "size"}
    data = base64.b64decode(item["b64_json"], validate=True)
    assert data[:3] == b"\xff\xd8\xff"
    image = decode(data)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (1280, 720))
    assert item["size"] == "1280x720"


async def test_alias_is_echoed_as_sent(client: httpx.AsyncClient) -> None:
    payload = await generate(client, model="seedream-4.0", size="1K")
    assert payload["model"] == "seedream-4.0"


# --- sizes and usage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "prompt", "delivered", "tokens"),
    [
        ("2K", "a fox", (2048, 2048), 16384),
        ("1760x2368", "a fox", (1760, 2368), 16280),
        ("1280x720", "a fox", (1280, 720), 3600),
        ("1K", "a fox, 16:9", (1312, 736), 3772),
        ("1K", "手机壁纸，竖屏", (736, 1312), 3772),
        ("1K", "一张横版海报", (1152, 864), 3888),
        ("1K", "cinematic 21:9", (1568, 672), 4116),
        ("1K", "a portrait of a woman", (1024, 1024), 4096),
        ("3840x240", "a banner", (3840, 240), 3600),
    ],
)
async def test_delivered_size_and_usage(
    client: httpx.AsyncClient, size: str, prompt: str, delivered: tuple[int, int], tokens: int
) -> None:
    payload = await generate(client, size=size, prompt=prompt, response_format="b64_json")
    (item,) = payload["data"]
    assert item["size"] == f"{delivered[0]}x{delivered[1]}"
    assert decode(base64.b64decode(item["b64_json"])).size == delivered
    assert payload["usage"] == {
        "generated_images": 1,
        "output_tokens": tokens,
        "total_tokens": tokens,
        "input_images": 0,
    }


async def test_4k_preset_is_delivered_at_full_size(client: httpx.AsyncClient) -> None:
    payload = await generate(client, size="4K", prompt="widescreen city at night", response_format="b64_json")
    (item,) = payload["data"]
    assert item["size"] == "5504x3040"
    assert decode(base64.b64decode(item["b64_json"])).size == (5504, 3040)
    assert payload["usage"]["output_tokens"] == 5504 * 3040 // 256 == 65360


async def test_default_size_is_2048_square(client: httpx.AsyncClient) -> None:
    response = await client.post(PATHS[0], json={"model": MODEL, "prompt": "a fox", "response_format": "b64_json"})
    assert response.json()["data"][0]["size"] == "2048x2048"


async def test_n_gives_independent_images_and_counts_usage(client: httpx.AsyncClient) -> None:
    payload = await generate(client, PATHS[1], n=3, seed=11, response_format="b64_json")
    assert len(payload["data"]) == 3
    assert payload["usage"] == {  # the OpenAI route: Ark's usage, then OpenAI's fields
        "generated_images": 3,
        "output_tokens": 3 * 3600,
        "total_tokens": 3 * 3600,
        "input_images": 0,
        "input_tokens": 0,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    }
    images = [decode(base64.b64decode(item["b64_json"])).convert("RGB") for item in payload["data"]]
    assert all(image.size == (1280, 720) for image in images)
    assert mean_diff(images[0], images[1]) > 5 and mean_diff(images[1], images[2]) > 5


async def test_n_images_as_urls_are_distinct_files(client: httpx.AsyncClient) -> None:
    payload = await generate(client, PATHS[1], n=3, size="1K")
    paths = [urlsplit(item["url"]).path for item in payload["data"]]
    assert [p[-7:] for p in paths] == ["_0.jpeg", "_1.jpeg", "_2.jpeg"]
    assert len({p[:-7] for p in paths}) == 1  # one request id
    for item in payload["data"]:
        assert decode(await image_bytes(client, item)).size == (1024, 1024)


async def test_optimize_prompt_fast_is_accepted(client: httpx.AsyncClient) -> None:
    payload = await generate(client, optimize_prompt_options={"mode": "fast"}, size="1K")
    assert payload["data"][0]["size"] == "1024x1024"


@pytest.mark.parametrize(
    ("options", "fast"),
    [({"mode": "fast"}, True), ({"mode": "standard"}, False), ({"mode": None}, False), (None, False)],
)
async def test_optimize_prompt_fast_reaches_the_engine(
    settings: Settings, options: dict[str, Any] | None, fast: bool
) -> None:
    """``mode: fast`` is the engine's business (fewer steps; see test_diffusers_engine): it must arrive there."""
    engine = RecordingEngine()
    recorded = replace(settings, models=(ModelConfig(name=MODEL, engine="recording"),))
    app = create_app(recorded, engine_factories={"recording": lambda model: engine})
    fields = {} if options is None else {"optimize_prompt_options": options}
    async with running(app) as client:
        response = await client.post(PATHS[0], json=body(size="1K", **fields))
    assert response.status_code == 200, response.text
    assert [job.fast for job in engine.jobs] == [fast]


# --- determinism and dependence on the inputs ---------------------------------------------------


async def test_same_seed_gives_identical_pixels(client: httpx.AsyncClient) -> None:
    a = await pixels(client, seed=1234, watermark=False)
    b = await pixels(client, seed=1234, watermark=False)
    assert max_diff(a, b) == 0


async def test_same_seed_is_identical_across_paths_and_formats(client: httpx.AsyncClient) -> None:
    a = await pixels(client, seed=99)
    payload = await generate(client, PATHS[1], seed=99)
    b = decode(await image_bytes(client, payload["data"][0])).convert("RGB")
    assert max_diff(a, b) == 0


async def test_different_seed_gives_different_image(client: httpx.AsyncClient) -> None:
    a = await pixels(client, seed=1)
    b = await pixels(client, seed=2)
    assert mean_diff(a, b) > 5


async def test_different_prompt_gives_different_image(client: httpx.AsyncClient) -> None:
    a = await pixels(client, seed=5, prompt="a red fox in the snow")
    b = await pixels(client, seed=5, prompt="a blue whale in the sea")
    assert mean_diff(a, b) > 5


async def test_seed_minus_one_is_random(client: httpx.AsyncClient) -> None:
    a = await pixels(client, seed=-1)
    b = await pixels(client)
    assert mean_diff(a, b) > 1


async def test_preview_is_labelled_as_such(client: httpx.AsyncClient) -> None:
    """The top band is the preview label: black with light text, on every image."""
    image = await pixels(client, seed=3, size="1K")
    band = image.crop((0, 0, 1024, 10))
    assert ImageStat.Stat(band.convert("L")).mean[0] < 60


# --- watermark ----------------------------------------------------------------------------------


async def test_watermark_marks_the_bottom_right_corner_only(client: httpx.AsyncClient) -> None:
    marked = await pixels(client, seed=77, watermark=True)
    plain = await pixels(client, seed=77, watermark=False)
    width, height = marked.size
    corner = (width * 3 // 4, height * 4 // 5, width, height)
    assert mean_diff(marked.crop(corner), plain.crop(corner)) > 3
    assert max_diff(marked.crop(corner), plain.crop(corner)) > 100
    top_left = (0, 0, width // 2, height // 2)
    assert max_diff(marked.crop(top_left), plain.crop(top_left)) == 0
    bottom_left = (0, height // 2, width // 2, height)
    assert max_diff(marked.crop(bottom_left), plain.crop(bottom_left)) == 0
    changed = ImageChops.difference(marked, plain).getbbox()
    assert changed is not None and changed[0] > width // 2 and changed[1] > height // 2


async def test_watermark_is_on_by_default(client: httpx.AsyncClient) -> None:
    default = await pixels(client, seed=77)
    marked = await pixels(client, seed=77, watermark=True)
    assert max_diff(default, marked) == 0


# --- provenance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("watermark", [True, False])
async def test_provenance_is_in_every_delivered_image(client: httpx.AsyncClient, watermark: bool) -> None:
    payload = await generate(client, n=2, size="1K", watermark=watermark)
    ids = []
    for item in payload["data"]:
        label = read_provenance(await image_bytes(client, item))
        assert label["Label"] == "1"
        assert label["ContentProducer"] == "seedream-server"
        assert label["ReservedCode1"] == MODEL
        assert label["model"] == MODEL
        assert label["engine"] == "preview"
        assert label["watermarked"] == str(watermark)
        assert label["content_id"] == label["ProduceID"]
        ids.append(label["ProduceID"])
    b64 = await generate(client, size="1K", response_format="b64_json")
    ids.append(read_provenance(await image_bytes(client, b64["data"][0]))["ProduceID"])
    assert len(set(ids)) == 3


# --- output formats (OpenAI extension) ----------------------------------------------------------


@pytest.mark.parametrize(("fmt", "pil", "mime"), [("png", "PNG", "image/png"), ("webp", "WEBP", "image/webp")])
async def test_output_format(client: httpx.AsyncClient, fmt: str, pil: str, mime: str) -> None:
    payload = await generate(client, size="1K", output_format=fmt, response_format="b64_json")
    data = base64.b64decode(payload["data"][0]["b64_json"])
    assert (decode(data).format, decode(data).size) == (pil, (1024, 1024))
    assert read_provenance(data)["Label"] == "1"
    payload = await generate(client, size="1K", output_format=fmt)
    url = payload["data"][0]["url"]
    assert urlsplit(url).path.endswith(f".{fmt}")
    response = await client.get(url)
    assert response.headers["content-type"] == mime
    assert decode(response.content).format == pil


# --- streaming (in-process; the raw socket test is in test_server.py) ---------------------------


async def test_stream_sends_one_event_per_image_then_completed_and_done(client: httpx.AsyncClient) -> None:
    response = await client.post(PATHS[0], json=body(stream=True, n=2, size="1K", response_format="b64_json"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"]
    events = sse_events(response.text)
    assert [kind for kind, _ in events] == [
        "image_generation.partial_succeeded",
        "image_generation.partial_succeeded",
        "image_generation.completed",
        None,
    ]
    assert events[-1][1] == "[DONE]"
    for index, (kind, data) in enumerate(events[:2]):
        event = json.loads(data)
        assert event["type"] == kind
        assert event["model"] == MODEL
        assert isinstance(event["created"], int)
        assert event["image_index"] == index
        assert event["size"] == "1024x1024"
        assert decode(base64.b64decode(event["b64_json"])).size == (1024, 1024)
    completed = json.loads(events[2][1])
    assert completed["type"] == "image_generation.completed"
    assert completed["usage"] == {"generated_images": 2, "output_tokens": 8192, "total_tokens": 8192, "input_images": 0}


# --- models, health, readiness, metrics ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/models", "/api/v3/models"])
async def test_models_list(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list"
    # with no configuration the preview engine serves every Seedream profile's ids
    assert [m["id"] for m in payload["data"]] == [m.name for m in default_models()]
    model = payload["data"][0]
    assert model["id"] == MODEL
    assert (model["profile"], model["size_tiers"], model["max_references"]) == ("seedream-4.0", ["1K", "2K", "4K"], 14)
    assert model["object"] == "model"
    assert isinstance(model["created"], int)
    assert isinstance(model["owned_by"], str)
    assert model["engine"] == "preview"
    assert "seedream-4.0" in model["aliases"]
    assert "preview" in model["description"].lower()


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert MODEL in response.json()["models"]


async def test_readyz_is_503_until_engines_started(app: FastAPI) -> None:
    """Without the lifespan (engines not started) the app is alive but not ready."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as bare:
        assert (await bare.get("/healthz")).status_code == 200
        response = await bare.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "starting"


async def test_metrics_count_requests_and_images(client: httpx.AsyncClient) -> None:
    await generate(client, size="1K", n=2, response_format="b64_json")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(rf'^seedream_requests_total\{{model="{MODEL}",status="ok"\}} 1\.0$', text, re.M), text
    assert re.search(rf'^seedream_images_total\{{model="{MODEL}",outcome="succeeded"\}} 2\.0$', text, re.M)
    for stage in ("plan", "generate", "encode"):
        assert f'seedream_stage_seconds_count{{stage="{stage}"}}' in text
    assert "seedream_request_seconds_bucket" in text
    assert "seedream_queue_depth" in text


async def test_metrics_are_per_app(client: httpx.AsyncClient) -> None:
    """A fresh app starts from zero (no global registry)."""
    text = (await client.get("/metrics")).text
    assert "seedream_requests_total{" not in text


# --- OpenAPI ------------------------------------------------------------------------------------

SPEC_FIELDS = {
    "model",
    "prompt",
    "image",
    "size",
    "sequential_image_generation",
    "sequential_image_generation_options",
    "stream",
    "response_format",
    "watermark",
    "seed",
    "guidance_scale",
    "optimize_prompt_options",
    "n",
    "quality",
    "style",
    "user",
    "output_format",
}
OPENAI_EXTRAS = {"n", "quality", "style", "user", "output_format"}


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and unwrap ``anyOf: [X, null]``."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _resolve(spec["components"]["schemas"][name], spec)
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        return _resolve(options[0], spec)
    return schema


def _enum(schema: dict[str, Any]) -> set[str]:
    if "enum" in schema:
        return set(schema["enum"])
    return {s["const"] for s in schema.get("anyOf", []) if "const" in s} | {
        value for s in schema.get("anyOf", []) for value in s.get("enum", [])
    }


async def test_openapi_documents_both_paths_and_every_field(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    request_schemas = set()
    for path in PATHS:
        operation = spec["paths"][path]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        request_schemas.add(ref)
        assert "text/event-stream" in operation["responses"]["200"]["content"]
        for status in ("400", "404", "429", "500"):
            error_ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert error_ref.endswith("/ErrorResponse")
    assert request_schemas == {"#/components/schemas/ImageGenerationRequest"}

    schema = spec["components"]["schemas"]["ImageGenerationRequest"]
    properties = schema["properties"]
    assert set(properties) >= SPEC_FIELDS
    assert set(schema["required"]) == {"model", "prompt"}
    for name, prop in properties.items():
        assert prop.get("description"), f"{name} has no description"
    for name in OPENAI_EXTRAS:
        assert properties[name].get("x-extension") == "openai", name
    for name in SPEC_FIELDS - OPENAI_EXTRAS:
        assert "x-extension" not in properties[name], name

    assert _enum(_resolve(properties["sequential_image_generation"], spec)) == {"auto", "disabled"}
    assert _enum(_resolve(properties["response_format"], spec)) == {"url", "b64_json"}
    assert _enum(_resolve(properties["output_format"], spec)) == {"jpeg", "png", "webp"}
    seed = _resolve(properties["seed"], spec)
    assert (seed["type"], seed["minimum"], seed["maximum"]) == ("integer", -1, 2147483647)
    n = _resolve(properties["n"], spec)
    assert (n["minimum"], n["maximum"]) == (1, 10)
    assert _resolve(properties["watermark"], spec)["type"] == "boolean"
    assert _resolve(properties["stream"], spec)["type"] == "boolean"
    assert _resolve(properties["guidance_scale"], spec)["type"] == "number"
    image_types = {s.get("type") for s in properties["image"]["anyOf"]}
    assert {"string", "array"} <= image_types

    options = _resolve(properties["sequential_image_generation_options"], spec)
    max_images = _resolve(options["properties"]["max_images"], spec)
    assert (max_images["minimum"], max_images["maximum"]) == (1, 15)
    optimize = _resolve(properties["optimize_prompt_options"], spec)
    assert _enum(_resolve(optimize["properties"]["mode"], spec)) == {"standard", "fast"}


async def test_openapi_documents_the_other_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/models", "/api/v3/models", "/healthz", "/readyz", "/metrics", "/files/{name}"):
        assert "get" in spec["paths"][path], path
    response_schema = spec["components"]["schemas"]["ImagesResponse"]
    assert set(response_schema["properties"]) == {"model", "created", "created_at", "data", "usage", "tools"}
    usage = spec["components"]["schemas"]["Usage"]
    assert set(usage["properties"]) == {
        "generated_images",
        "output_tokens",
        "total_tokens",
        "input_images",
        "tool_usage",
    }
    assert (await client.get("/docs")).status_code == 200


async def test_openapi_operation_ids_are_unique(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    ids = [operation["operationId"] for item in spec["paths"].values() for operation in item.values()]
    assert len(ids) == len(set(ids))


async def test_metrics_count_refusals_by_status(client: httpx.AsyncClient) -> None:
    await client.post("/api/v3/images/generations", json={"model": "nope", "prompt": "x"})
    await client.post("/api/v3/images/generations", json={"prompt": "x"})
    text = (await client.get("/metrics")).text
    assert 'seedream_http_responses_total{status="404"} 1.0' in text
    assert 'seedream_http_responses_total{status="400"} 1.0' in text
