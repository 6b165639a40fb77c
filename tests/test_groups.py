"""Group generation (sequential_image_generation auto), per-image failures, moderation, and SSE events."""

from __future__ import annotations

import base64
import io
import json
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from checks import FlakyEngine
from seedream_server.config import ModelConfig, Settings
from seedream_server.http import create_app
from support import GENERATIONS, MODEL, OPENAI_GENERATIONS, SEED_PROMPT, body, decode_b64, running, sse_events


def client_for(settings: Settings, **factories: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return running(create_app(settings, engine_factories=factories or None))


async def test_seed_example_gives_morning_noon_evening(client: httpx.AsyncClient) -> None:
    r = await client.post(
        GENERATIONS,
        json=body(
            prompt=SEED_PROMPT,
            seed=11,
            sequential_image_generation="auto",
            sequential_image_generation_options={"max_images": 3},
        ),
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["data"]) == 3
    assert out["usage"] == {
        "generated_images": 3,
        "output_tokens": 3 * 3600,
        "total_tokens": 3 * 3600,
        "input_images": 0,
    }
    images = [np.asarray(decode_b64(item["b64_json"]), dtype=np.int16) for item in out["data"]]
    assert all(img.shape == (720, 1280, 3) for img in images)
    # a related set, yet every image differs
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])


async def test_group_is_related_more_than_independent_images(client: httpx.AsyncClient) -> None:
    group = (
        await client.post(
            OPENAI_GENERATIONS,
            json=body(
                prompt="a series of 2 pictures of a fox", seed=11, sequential_image_generation="auto", watermark=False
            ),
        )
    ).json()
    a, b = (np.asarray(decode_b64(i["b64_json"]), dtype=np.float32) for i in group["data"])
    other = (
        await client.post(OPENAI_GENERATIONS, json=body(prompt="a lighthouse in fog", seed=999, watermark=False))
    ).json()
    c = np.asarray(decode_b64(other["data"][0]["b64_json"]), dtype=np.float32)
    assert np.abs(a - b).mean() < np.abs(a - c).mean()


@pytest.mark.parametrize(
    ("prompt", "options", "images", "expected"),
    [
        (SEED_PROMPT, {"max_images": 2}, None, 2),  # capped by max_images
        ("a set of four stickers of a cat", None, None, 4),
        ("one cat on a sofa", None, None, 1),  # nothing asks for more
        ("生成10张猫的图片", None, 8, 7),  # 15 - 8 references
    ],
)
async def test_group_count_caps(
    client: httpx.AsyncClient, prompt: str, options: dict[str, int] | None, images: int | None, expected: int
) -> None:
    fields: dict[str, Any] = {"prompt": prompt, "sequential_image_generation": "auto"}
    if options:
        fields["sequential_image_generation_options"] = options
    if images:
        ref = io.BytesIO()
        Image.new("RGB", (64, 48), (10, 200, 30)).save(ref, "PNG")
        fields["image"] = ["data:image/png;base64," + base64.b64encode(ref.getvalue()).decode()] * images
    r = await client.post(GENERATIONS, json=body(**fields))
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == expected
    assert r.json()["usage"]["generated_images"] == expected


async def test_disabled_ignores_group_words(client: httpx.AsyncClient) -> None:
    r = await client.post(GENERATIONS, json=body(prompt=SEED_PROMPT))
    assert len(r.json()["data"]) == 1


async def test_stream_events_in_order_then_done(client: httpx.AsyncClient) -> None:
    r = await client.post(
        GENERATIONS,
        json=body(prompt=SEED_PROMPT, sequential_image_generation="auto", stream=True, response_format="url"),
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [e for e, _ in events] == ["image_generation.partial_succeeded"] * 3 + ["image_generation.completed", None]
    assert events[-1][1] == "[DONE]"
    payloads = [json.loads(d) for _, d in events[:-1]]
    assert [p["image_index"] for p in payloads[:3]] == [0, 1, 2]
    for p in payloads[:3]:
        assert p["type"] == "image_generation.partial_succeeded" and p["model"] == MODEL
        assert p["size"] == "1280x720" and p["url"].startswith("http://127.0.0.1:8000/files/")
        assert (await client.get(p["url"])).status_code == 200
    assert payloads[3]["usage"] == {
        "generated_images": 3,
        "output_tokens": 10800,
        "total_tokens": 10800,
        "input_images": 0,
    }


async def test_stream_validation_error_is_plain_json(client: httpx.AsyncClient) -> None:
    r = await client.post(GENERATIONS, json=body(prompt="x", stream=True, size="9x9"))
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["param"] == "size"


@pytest.fixture
def moderated(settings: Settings) -> Settings:
    return replace(settings, moderation_words="forbidden,禁词", moderation_image_check="checks:RejectNoon")


async def test_prompt_word_list_refuses_before_work(moderated: Settings) -> None:
    async with client_for(moderated) as c:
        for prompt in ("a FORBIDDEN thing", "一张 禁 词 图片"):
            r = await c.post(GENERATIONS, json=body(prompt=prompt, stream=True))
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "InputTextSensitiveContentDetected"
            assert r.json()["error"]["param"] == "prompt"
        images = list((Path(moderated.data_dir) / "images").glob("*"))
        assert images == []


async def test_content_filter_failure_continues_group(moderated: Settings) -> None:
    async with client_for(moderated) as c:
        r = await c.post(GENERATIONS, json=body(prompt=SEED_PROMPT, sequential_image_generation="auto"))
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert "b64_json" in data[0] and "b64_json" in data[2]
        assert data[1] == {
            "error": {"code": "OutputImageSensitiveContentDetected", "message": data[1]["error"]["message"]}
        }
        assert r.json()["usage"]["generated_images"] == 2
        assert r.json()["usage"]["output_tokens"] == 2 * 3600

        r = await c.post(GENERATIONS, json=body(prompt=SEED_PROMPT, sequential_image_generation="auto", stream=True))
        events = sse_events(r.text)
        kinds = [e for e, _ in events]
        assert kinds == [
            "image_generation.partial_succeeded",
            "image_generation.partial_failed",
            "image_generation.partial_succeeded",
            "image_generation.completed",
            None,
        ]
        failed = json.loads(events[1][1])
        assert failed["image_index"] == 1
        assert failed["error"]["code"] == "OutputImageSensitiveContentDetected"
        assert json.loads(events[3][1])["usage"]["generated_images"] == 2


async def test_reference_image_check(moderated: Settings) -> None:
    ref = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(ref, "PNG")
    async with client_for(moderated) as c:
        r = await c.post(
            GENERATIONS,
            json=body(prompt="a cat", image="data:image/png;base64," + base64.b64encode(ref.getvalue()).decode()),
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "InputImageSensitiveContentDetected"
        assert r.json()["error"]["param"] == "image"


async def test_every_image_refused_is_an_error_response(settings: Settings) -> None:
    strict = replace(settings, moderation_image_check="checks:RejectEverything")
    async with client_for(strict) as c:
        r = await c.post(GENERATIONS, json=body(prompt="a cat"))
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "OutputImageSensitiveContentDetected"


@pytest.fixture
def flaky(settings: Settings) -> tuple[Settings, list[FlakyEngine]]:
    engines: list[FlakyEngine] = []
    return replace(settings, models=(ModelConfig(name="flaky-model", engine="flaky"),)), engines


async def test_internal_failure_stops_group(flaky: tuple[Settings, list[FlakyEngine]]) -> None:
    settings, engines = flaky

    def factory(model: ModelConfig) -> FlakyEngine:
        engines.append(FlakyEngine(good=2))
        return engines[-1]

    async with client_for(settings, flaky=factory) as c:
        fields = {
            "model": "flaky-model",
            "prompt": "a set of 6 pictures of a boat",
            "sequential_image_generation": "auto",
        }
        r = await c.post(GENERATIONS, json=body(**fields))
        assert r.status_code == 200
        data = r.json()["data"]
        assert len(data) == 3 and "b64_json" in data[1]
        assert data[2]["error"]["code"] == "InternalServiceError"
        assert r.json()["usage"]["generated_images"] == 2
        assert max(engines[0].started) == 2  # nothing generated after the failure

        r = await c.post(GENERATIONS, json=body(**fields, stream=True))
        events = sse_events(r.text)
        assert [e for e, _ in events] == ["image_generation.partial_succeeded"] * 2 + ["error"]
        error = json.loads(events[2][1])["error"]
        assert error["code"] == "InternalServiceError" and "Request id:" in error["message"]
        assert r.headers["x-request-id"] in error["message"]


async def test_internal_failure_of_first_image_is_500(flaky: tuple[Settings, list[FlakyEngine]]) -> None:
    settings, _ = flaky
    async with client_for(settings, flaky=lambda m: FlakyEngine(good=0)) as c:
        r = await c.post(GENERATIONS, json=body(model="flaky-model", prompt="a boat"))
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "InternalServiceError"
        assert "Traceback" not in r.text
