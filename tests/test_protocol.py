"""Request validation (SPEC §2, §9): every field of the request body, through the in-process app.

Every refusal is checked for the whole Ark envelope: status, ``code``, ``param``, and a message ending
in ``Request id: <id>`` equal to the ``X-Request-Id`` header. Conversion to the service's
``GenerationRequest`` (defaults, nulls) is checked directly on :mod:`seedream_server.protocol`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from seedream_server.config import Settings
from seedream_server.errors import InvalidParameter
from seedream_server.http import create_app
from seedream_server.protocol import ImageGenerationRequest, edit_form_to_request, to_generation_request
from support import GENERATIONS, MODEL, PATHS, assert_error, body, running


def assert_ok(response: httpx.Response, images: int = 1) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    payload = response.json()
    assert len(payload["data"]) == images
    assert payload["usage"]["generated_images"] == images
    return dict(payload)


# --- required fields ----------------------------------------------------------------------------

MISSING = [
    ({"prompt": "x"}, "model"),
    ({"model": None, "prompt": "x"}, "model"),
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": None}, "prompt"),
    ({}, "model"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("payload", "param"), MISSING)
async def test_missing_required_fields(
    client: httpx.AsyncClient, path: str, payload: dict[str, Any], param: str
) -> None:
    error = assert_error(await client.post(path, json=payload), 400, "MissingParameter", param)
    assert param in error["message"]


# --- one wrong value per field ------------------------------------------------------------------

INVALID = [
    ("model", 5, "model"),
    ("model", ["a"], "model"),
    ("prompt", "", "prompt"),
    ("prompt", "   ", "prompt"),
    ("prompt", "\n\t　", "prompt"),  # ideographic space too
    ("prompt", 5, "prompt"),
    ("prompt", ["a fox"], "prompt"),
    ("image", 5, "image"),
    ("image", {"url": "http://x"}, "image"),
    ("size", 2048, "size"),
    ("size", "3K", "size"),
    ("size", "2048 x 2048", "size"),
    ("size", "1279x720", "size"),
    ("size", "3841x240", "size"),
    ("sequential_image_generation", "on", "sequential_image_generation"),
    ("sequential_image_generation", "AUTO", "sequential_image_generation"),
    ("sequential_image_generation", True, "sequential_image_generation"),
    ("sequential_image_generation_options", 5, "sequential_image_generation_options"),
    ("sequential_image_generation_options", {"max_images": 0}, "sequential_image_generation_options.max_images"),
    ("sequential_image_generation_options", {"max_images": 16}, "sequential_image_generation_options.max_images"),
    ("sequential_image_generation_options", {"max_images": "3"}, "sequential_image_generation_options.max_images"),
    ("sequential_image_generation_options", {"max_images": 2.5}, "sequential_image_generation_options.max_images"),
    ("stream", 1, "stream"),
    ("stream", "true", "stream"),
    ("response_format", "png", "response_format"),
    ("response_format", "URL", "response_format"),
    ("response_format", "b64", "response_format"),
    ("watermark", "yes", "watermark"),
    ("watermark", 1, "watermark"),
    ("watermark", "false", "watermark"),
    ("seed", "5", "seed"),
    ("seed", 1.5, "seed"),
    ("seed", True, "seed"),
    ("seed", -2, "seed"),
    ("seed", 2147483648, "seed"),
    ("seed", 10**30, "seed"),
    ("guidance_scale", -1, "guidance_scale"),
    ("guidance_scale", "5", "guidance_scale"),
    ("guidance_scale", True, "guidance_scale"),
    ("optimize_prompt", "yes", "optimize_prompt"),
    ("optimize_prompt_options", "fast", "optimize_prompt_options"),
    ("optimize_prompt_options", {"mode": "turbo"}, "optimize_prompt_options.mode"),
    ("optimize_prompt_options", {"mode": "FAST"}, "optimize_prompt_options.mode"),
    ("n", 0, "n"),
    ("n", 11, "n"),
    ("n", -1, "n"),
    ("n", "2", "n"),
    ("n", 1.5, "n"),
    ("quality", 5, "quality"),
    ("style", 5, "style"),
    ("user", 5, "user"),
    ("user", "u" * 257, "user"),
    ("quality", "q" * 65, "quality"),
    ("style", "s" * 65, "style"),
    ("output_format", "gif", "output_format"),
    ("output_format", "JPEG", "output_format"),
    ("output_format", "jpg", "output_format"),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("field", "value", "param"), INVALID)
async def test_invalid_values_are_400_naming_the_field(
    client: httpx.AsyncClient, path: str, field: str, value: Any, param: str
) -> None:
    error = assert_error(await client.post(path, json=body(**{field: value})), 400, "InvalidParameter", param)
    assert error["type"] == "invalid_request_error"


async def test_image_list_with_a_non_string_names_image(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.post(PATHS[0], json=body(image=["data:x", 1])), 400, "InvalidParameter")
    assert error["param"].startswith("image")


async def test_prompt_length_limit_is_4000_characters(client: httpx.AsyncClient) -> None:
    assert_ok(await client.post(PATHS[0], json=body(prompt="狐" * 4000)))
    error = assert_error(await client.post(PATHS[0], json=body(prompt="a" * 4001)), 400, "InvalidParameter", "prompt")
    assert "4001" in error["message"] and "4000" in error["message"]


async def test_prompt_length_limit_is_configurable(settings: Settings) -> None:
    app = create_app(settings.with_overrides(max_prompt_chars=12))
    async with running(app) as client:
        assert_ok(await client.post(PATHS[0], json=body(prompt="x" * 12)))
        error = assert_error(await client.post(PATHS[0], json=body(prompt="x" * 13)), 400, "InvalidParameter", "prompt")
        assert "12" in error["message"]


# --- accepted values ----------------------------------------------------------------------------

VALID = [
    ("seed", -1),
    ("seed", 0),
    ("seed", 2147483647),
    ("guidance_scale", 0),
    ("guidance_scale", 7.5),
    ("guidance_scale", 5),  # an integer where a number is expected
    ("sequential_image_generation", "disabled"),
    ("sequential_image_generation_options", {"max_images": 1}),
    ("sequential_image_generation_options", {"max_images": 15}),
    ("stream", False),
    ("watermark", False),
    ("watermark", True),
    ("optimize_prompt", True),
    ("optimize_prompt_options", {"mode": "fast"}),
    ("optimize_prompt_options", {"mode": "standard"}),
    ("quality", "high"),
    ("style", "vivid"),
    ("user", "user-1234"),
    ("user", "u" * 256),
    ("quality", "q" * 64),
    ("style", "s" * 64),
    ("output_format", "jpeg"),
    ("prompt", "一只在雪地里的红狐狸"),
    ("prompt", "  padded prompt  "),
    ("model", "seedream-4.0"),  # an alias
    ("model", "doubao-seedream-4.0"),
]


@pytest.mark.parametrize(("field", "value"), VALID)
async def test_accepted_values(client: httpx.AsyncClient, field: str, value: Any) -> None:
    assert_ok(await client.post(PATHS[0], json=body(**{field: value})))


async def test_n_up_to_10_gives_n_images(client: httpx.AsyncClient) -> None:
    payload = assert_ok(await client.post(PATHS[1], json=body(n=10, size="1280x720")), images=10)
    assert payload["usage"]["output_tokens"] == 10 * 3600


async def test_nulls_mean_defaults(client: httpx.AsyncClient) -> None:
    """The Ark SDK sends explicit nulls for every argument left out."""
    nulls = dict.fromkeys(
        [
            "image",
            "size",
            "sequential_image_generation",
            "sequential_image_generation_options",
            "stream",
            "response_format",
            "watermark",
            "seed",
            "guidance_scale",
            "optimize_prompt",
            "optimize_prompt_options",
            "n",
            "quality",
            "style",
            "user",
            "output_format",
            "tools",
            "layer_decomposition",
        ]
    )
    response = await client.post(PATHS[0], json={"model": MODEL, "prompt": "a fox", **nulls})
    payload = assert_ok(response)
    item = payload["data"][0]
    assert item["size"] == "2048x2048"  # default size
    assert item["url"].startswith("http://127.0.0.1:8000/files/")  # default response_format url
    assert payload["usage"] == {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384, "input_images": 0}


async def test_nested_nulls_mean_defaults(client: httpx.AsyncClient) -> None:
    payload = body(sequential_image_generation_options={"max_images": None}, optimize_prompt_options={"mode": None})
    assert_ok(await client.post(PATHS[0], json=payload))


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    payload = body(
        foo=1,
        metadata={"a": [1, 2]},
        sequential_image_generation_options={"max_images": 3, "future_option": True},
        optimize_prompt_options={"mode": "fast", "thinking": "auto"},
    )
    assert_ok(await client.post(PATHS[0], json=payload))


# --- bodies that are not a request --------------------------------------------------------------

BAD_BODIES = [b"not json", b"{", b'{"model": "x",}', b"[1, 2]", b"[]", b"null", b'"text"', b"42", b"", b"\xff\xfe"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("raw", BAD_BODIES)
async def test_bodies_that_are_not_a_json_object(client: httpx.AsyncClient, path: str, raw: bytes) -> None:
    response = await client.post(path, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, "InvalidParameter")


# --- models and routes --------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
async def test_unknown_model_is_404_naming_model(client: httpx.AsyncClient, path: str) -> None:
    error = assert_error(
        await client.post(path, json=body(model="gpt-image-1")), 404, "InvalidEndpointOrModel.NotFound", "model"
    )
    assert "gpt-image-1" in error["message"]


async def test_unknown_model_wins_over_a_bad_size(client: httpx.AsyncClient) -> None:
    """The model is resolved first: a client with the wrong model hears about the model."""
    assert_error(
        await client.post(PATHS[0], json=body(model="nope", size="3K")), 404, "InvalidEndpointOrModel.NotFound"
    )


@pytest.mark.parametrize("path", ["/nope", "/api/v3/images", "/api/v3/images/generation", "/v2/images/generations"])
async def test_unknown_route_is_404_envelope(client: httpx.AsyncClient, path: str) -> None:
    error = assert_error(await client.post(path, json=body()), 404, "InvalidEndpointOrModel.NotFound")
    assert path in error["message"]
    assert_error(await client.get(path), 404, "InvalidEndpointOrModel.NotFound")


@pytest.mark.parametrize("path", PATHS)
async def test_wrong_method_is_an_error_envelope(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 405
    assert_error(response, 405, response.json()["error"]["code"])


async def test_every_response_has_a_fresh_request_id(client: httpx.AsyncClient) -> None:
    ids = set()
    for response in [
        await client.post(PATHS[0], json=body()),
        await client.post(PATHS[0], json=body(seed="x")),
        await client.get("/healthz"),
        await client.get("/nope"),
    ]:
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 4


async def test_streaming_validation_error_is_plain_json_before_any_event(client: httpx.AsyncClient) -> None:
    response = await client.post(PATHS[0], json=body(stream=True, size="3K"))
    assert_error(response, 400, "InvalidParameter", "size")
    assert "event:" not in response.text


# --- conversion to the service's request --------------------------------------------------------


def test_defaults_follow_the_spec() -> None:
    request = to_generation_request(ImageGenerationRequest.model_validate({"model": MODEL, "prompt": "p"}))
    assert request.model == MODEL
    assert request.images == ()
    assert request.size == "2048x2048"
    assert request.sequential is False
    assert request.max_images == 15
    assert request.n == 1
    assert request.stream is False
    assert request.response_format == "url"
    assert request.watermark is True
    assert request.seed == -1
    assert request.guidance_scale is None
    assert request.fast is False
    assert request.output_format == "jpeg"


def test_conversion_carries_every_field() -> None:
    wire = ImageGenerationRequest.model_validate(
        {
            "model": MODEL,
            "prompt": "p",
            "image": "https://example.com/a.png",
            "size": "4K",
            "sequential_image_generation": "auto",
            "sequential_image_generation_options": {"max_images": 4},
            "stream": True,
            "response_format": "b64_json",
            "watermark": False,
            "seed": 42,
            "guidance_scale": 3.5,
            "optimize_prompt_options": {"mode": "fast"},
            "n": 3,
            "user": "u1",
            "output_format": "webp",
        }
    )
    request = to_generation_request(wire)
    assert request.images == ("https://example.com/a.png",)
    assert (request.size, request.sequential, request.max_images, request.n) == ("4K", True, 4, 3)
    assert (request.stream, request.response_format, request.watermark, request.seed) == (True, "b64_json", False, 42)
    assert (request.guidance_scale, request.fast, request.output_format, request.user) == (3.5, True, "webp", "u1")


def test_image_list_is_kept_in_order() -> None:
    wire = ImageGenerationRequest.model_validate({"model": MODEL, "prompt": "p", "image": ["b", "a", "c"]})
    assert to_generation_request(wire).images == ("b", "a", "c")


def test_unknown_fields_are_kept_aside() -> None:
    wire = ImageGenerationRequest.model_validate({"model": MODEL, "prompt": "p", "tools": [], "zzz": 1})
    assert set(wire.model_extra or {}) == {"zzz"}  # tools is a Seedream 5.0 field now
    assert wire.tools == []
    assert to_generation_request(wire).fields["zzz"] == 1  # kept for engines that relay the request


async def test_an_empty_model_is_missing(client: httpx.AsyncClient) -> None:
    for model in ("", "   "):
        r = await client.post(GENERATIONS, json=body(model=model))
        assert_error(r, 400, "MissingParameter", param="model")


def test_edit_form_integers_take_integral_floats_as_json_does() -> None:
    fields = [("model", MODEL), ("prompt", "x")]
    assert edit_form_to_request([*fields, ("seed", "3.0")], [b"img"]).seed == 3
    with pytest.raises(InvalidParameter) as refused:
        edit_form_to_request([*fields, ("seed", "3.5")], [b"img"])
    assert refused.value.param == "seed"
