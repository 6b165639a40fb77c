"""The official clients as test clients (SPEC preamble, §2, §6, §7, §9): the Ark SDK
(``volcengine-ark-runtime``) and the ``openai`` SDK against a real ``seedream serve`` process.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image, ImageChops
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime._exceptions import ArkBadRequestError, ArkNotFoundError
from volcenginesdkarkruntime.types.images.images import OptimizePromptOptions

from conftest import LiveServer
from seedream_server.postprocess import read_provenance
from support import MODEL, decode

PROMPT = "a lighthouse on a cliff at dawn"


@pytest.fixture
def ark(live_server: LiveServer) -> Iterator[Ark]:
    client = Ark(base_url=f"{live_server.url}/api/v3", api_key="test", timeout=60, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def oai(live_server: LiveServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="test", timeout=60, max_retries=0)
    yield client
    client.close()


def max_diff(a: Image.Image, b: Image.Image) -> int:
    return max(hi for _lo, hi in ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getextrema())  # type: ignore[misc]


# --- Ark SDK ------------------------------------------------------------------------------------


def test_ark_sdk_url(ark: Ark) -> None:
    response = ark.images.generate(
        model=MODEL,
        prompt=PROMPT,
        size="2K",
        response_format="url",
        seed=7,
        watermark=False,
        sequential_image_generation="disabled",
    )
    assert response.model == MODEL
    assert len(response.data) == 1
    image = response.data[0]
    assert image.size == "2048x2048"
    fetched = httpx.get(image.url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/jpeg"
    assert decode(fetched.content).size == (2048, 2048)
    assert read_provenance(fetched.content)["watermarked"] == "False"
    assert response.usage.generated_images == 1
    assert response.usage.output_tokens == 16384
    assert response.usage.total_tokens == 16384


def test_ark_sdk_b64_json_matches_the_url_image(ark: Ark) -> None:
    kwargs = {"model": MODEL, "prompt": PROMPT, "size": "2K", "seed": 7, "watermark": False}
    as_b64 = ark.images.generate(**kwargs, response_format="b64_json", sequential_image_generation="disabled")
    as_url = ark.images.generate(**kwargs, response_format="url", sequential_image_generation="disabled")
    inline = decode(base64.b64decode(as_b64.data[0].b64_json))
    assert inline.size == (2048, 2048)
    assert as_b64.data[0].size == "2048x2048"
    linked = decode(httpx.get(as_url.data[0].url, timeout=30).content)
    assert max_diff(inline, linked) == 0  # same seed, same pixels


def test_ark_sdk_explicit_size_and_options(ark: Ark) -> None:
    response = ark.images.generate(
        model=MODEL,
        prompt=PROMPT,
        size="1760x2368",
        response_format="b64_json",
        seed=1,
        guidance_scale=2.5,
        watermark=True,
        optimize_prompt_options=OptimizePromptOptions(mode="fast"),
        sequential_image_generation="disabled",
    )
    assert response.data[0].size == "1760x2368"
    assert decode(base64.b64decode(response.data[0].b64_json)).size == (1760, 2368)
    assert response.usage.output_tokens == 16280


def test_ark_sdk_stream(ark: Ark) -> None:
    stream = ark.images.generate(
        model=MODEL, prompt=PROMPT, size="1K", response_format="url", seed=3, watermark=False, stream=True
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.partial_succeeded", "image_generation.completed"]
    assert events[0].size == "1024x1024"
    assert httpx.get(events[0].url, timeout=30).status_code == 200
    usage = events[1].usage  # the SDK's union cannot tell its event models apart: a dict here
    usage = usage if isinstance(usage, dict) else usage.model_dump()
    assert (usage["generated_images"], usage["output_tokens"], usage["total_tokens"]) == (1, 4096, 4096)


def test_ark_sdk_bad_size_is_bad_request(ark: Ark) -> None:
    with pytest.raises(ArkBadRequestError) as info:
        ark.images.generate(model=MODEL, prompt=PROMPT, size="2048*2048")
    assert info.value.status_code == 400
    assert info.value.code == "InvalidParameter"
    assert info.value.param == "size"
    assert "Request id:" in info.value.message


def test_ark_sdk_unknown_model_is_not_found(ark: Ark) -> None:
    with pytest.raises(ArkNotFoundError) as info:
        ark.images.generate(model="no-such-model", prompt=PROMPT, size="1K")
    assert info.value.code == "InvalidEndpointOrModel.NotFound"


# --- openai SDK ---------------------------------------------------------------------------------


def test_openai_sdk_b64_json(oai: openai.OpenAI) -> None:
    response = oai.images.generate(
        model=MODEL,
        prompt=PROMPT,
        size="2048x2048",
        response_format="b64_json",
        extra_body={"watermark": False, "seed": 7, "sequential_image_generation": "disabled"},
    )
    assert response.data is not None and len(response.data) == 1
    b64 = response.data[0].b64_json
    assert b64 is not None
    image = decode(base64.b64decode(b64))
    assert (image.format, image.size) == ("JPEG", (2048, 2048))
    assert response.usage is not None
    usage = response.usage.model_dump()
    assert (usage["generated_images"], usage["output_tokens"], usage["total_tokens"]) == (1, 16384, 16384)
    assert read_provenance(base64.b64decode(b64))["model"] == MODEL


def test_openai_and_ark_sdks_get_the_same_pixels(oai: openai.OpenAI, ark: Ark) -> None:
    fields = {"watermark": False, "seed": 7, "sequential_image_generation": "disabled"}
    from_openai = oai.images.generate(
        model=MODEL, prompt=PROMPT, size="1280x720", response_format="b64_json", extra_body=fields
    )
    from_ark = ark.images.generate(model=MODEL, prompt=PROMPT, size="1280x720", response_format="b64_json", **fields)  # type: ignore[arg-type]
    assert from_openai.data is not None and from_openai.data[0].b64_json is not None
    a = decode(base64.b64decode(from_openai.data[0].b64_json))
    b = decode(base64.b64decode(from_ark.data[0].b64_json))
    assert max_diff(a, b) == 0


def test_openai_sdk_url_and_n(oai: openai.OpenAI) -> None:
    response = oai.images.generate(model=MODEL, prompt=PROMPT, size="1024x1024", n=2, response_format="url")
    assert response.data is not None and len(response.data) == 2
    for item in response.data:
        assert item.url is not None
        fetched = httpx.get(item.url, timeout=30)
        assert decode(fetched.content).size == (1024, 1024)


def test_openai_sdk_bad_size_is_bad_request(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.images.generate(model=MODEL, prompt=PROMPT, size="2048x2048x2")
    assert info.value.status_code == 400
    assert info.value.code == "InvalidParameter"
    assert info.value.param == "size"
    assert info.value.request_id == info.value.response.headers["x-request-id"]


def test_openai_sdk_unknown_model_is_not_found(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.images.generate(model="dall-e-3", prompt=PROMPT)
    assert info.value.code == "InvalidEndpointOrModel.NotFound"


def test_openai_sdk_lists_models(oai: openai.OpenAI) -> None:
    ids = [model.id for model in oai.models.list()]
    assert ids[0] == MODEL and "doubao-seedream-5-0-260128" in ids and len(ids) == 5
