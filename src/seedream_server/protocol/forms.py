"""The OpenAI ``/v1/images/edits`` multipart form: its documented model and its mapping onto a
:class:`GenerationRequest` (uploaded files stay bytes)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ..errors import InvalidParameter, MissingParameter
from .requests import MAX_SEED, GenerationRequest, ImageGenerationRequest, integral, to_generation_request
from .validation import translate_validation_error

_FORM_BOOLS = {"watermark", "stream", "optimize_prompt"}
_FORM_INTS = {"n", "seed"}
_FORM_FLOATS = {"guidance_scale"}
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def _form_value(name: str, raw: str) -> Any:
    """Typed value of one multipart text field; the error names the field."""
    try:
        if name in _FORM_BOOLS:
            if raw.lower() in _TRUE | _FALSE:
                return raw.lower() in _TRUE
            raise ValueError("expected true or false")
        if name in _FORM_INTS:
            return integral(float(raw)) if "." in raw or "e" in raw.lower() else int(raw)
        if name in _FORM_FLOATS:
            return float(raw)
        if name in {"sequential_image_generation_options", "optimize_prompt_options"}:
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
    except ValueError as exc:
        raise InvalidParameter(
            f"The parameter `{name}` specified in the request is not valid: {raw!r} ({exc}).", param=name
        ) from exc
    return raw


class ImageEditForm(BaseModel):
    """``POST /v1/images/edits`` (multipart/form-data): the documented form; :func:`edit_form_to_request`
    reads it. Nested options come as JSON text or flattened (``sequential_image_generation_options[max_images]``).
    """

    image: list[bytes] = Field(
        alias="image[]",
        description="Reference images (1..14), any of jpeg, png, webp, bmp, tiff, gif; also accepted as image.",
        json_schema_extra={"items": {"type": "string", "format": "binary"}},
    )
    model: str = Field(description="A served model name or alias.", json_schema_extra={"minLength": 1})
    prompt: str = Field(description="Text prompt; non-empty.", json_schema_extra={"minLength": 1})
    n: int | None = Field(default=None, ge=1, le=10, description="Independent images when not a group.")
    size: str | None = Field(default=None, description="1K, 2K, 4K or <W>x<H>.")
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["jpeg", "png", "webp"] | None = None
    watermark: bool | None = None
    seed: int | None = Field(default=None, ge=-1, le=MAX_SEED)
    sequential_image_generation: Literal["auto", "disabled"] | None = None
    stream: bool | None = None
    guidance_scale: float | None = Field(default=None, ge=0, le=30)
    optimize_prompt_options: str | None = Field(default=None, description='JSON object, e.g. {"mode": "fast"}.')
    sequential_image_generation_options: str | None = Field(
        default=None,
        description='JSON object {"max_images": N}, or the flattened field '
        "sequential_image_generation_options[max_images].",
    )
    quality: str | None = Field(default=None, description="Accepted and ignored.")
    style: str | None = Field(default=None, description="Accepted and ignored.")
    user: str | None = Field(default=None, description="End-user id, logged.")


def edit_form_to_request(fields: list[tuple[str, str]], uploads: list[bytes]) -> GenerationRequest:
    """Map an OpenAI ``/v1/images/edits`` multipart form onto a generation request.

    ``fields`` are the text fields in order; ``uploads`` the image files' bytes, which go to the reference
    loader as they are. Nested options may come as JSON (``sequential_image_generation_options={"max_images":3}``)
    or flattened (``sequential_image_generation_options[max_images]=3``).
    """
    body: dict[str, Any] = {}
    for name, raw in fields:
        if name == "mask":
            raise InvalidParameter(
                "The parameter `mask` is not supported: masks are not used by Seedream.", param="mask"
            )
        if "[" in name and name.endswith("]"):
            outer, inner = name[:-1].split("[", 1)
            target = body.setdefault(outer, {})
            if isinstance(target, dict):
                target[inner] = int(raw) if inner == "max_images" and raw.lstrip("-").isdigit() else raw
            continue
        body[name] = _form_value(name, raw)
    if not uploads:
        raise MissingParameter("The request failed because it is missing the parameter: image.", param="image")
    try:
        parsed = ImageGenerationRequest.model_validate(body)
    except ValidationError as exc:
        raise translate_validation_error(exc) from exc
    return replace(to_generation_request(parsed), images=tuple(uploads))
