"""Wire models for the Ark and OpenAI image APIs, and their conversion into a :class:`GenerationRequest`.

Fields follow the upstream order (Ark first, then OpenAI extras, marked ``x-extension``). Types are strict:
a string where an integer is expected is an error, never silently converted. ``null`` means "use the
default" for every optional field (the Ark SDK sends explicit nulls). Unknown fields are kept in
``model_extra`` and ignored. No I/O happens here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .errors import InvalidParameter, MissingParameter, SeedreamError

MAX_IMAGES_PER_REQUEST = 15  # references + outputs of one request
MAX_SEED = 2_147_483_647  # seeds are -1 (random) or 0..MAX_SEED
MAX_N = 10  # OpenAI's n: independent images of one request
_EXT: dict[str, Any] = {"x-extension": "openai"}
_NON_EMPTY: dict[str, Any] = {"minLength": 1}  # documented; the check (and its Ark message) is in the code


def _utf8(value: str) -> str:
    """Strings must encode to UTF-8: a lone surrogate (``"\\ud800"`` in JSON) is refused, never a 500 later."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the string is not valid Unicode (it contains a lone surrogate)") from None
    return value


def _integral(value: Any) -> Any:
    """JSON Schema integers include ``3.0``: accept an integral float as that integer (``3.5`` stays an error)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: a string field: valid UTF-8
Text = Annotated[str, AfterValidator(_utf8)]
#: integer fields, which also take integral floats as JSON Schema does
Seed = Annotated[int, Field(ge=-1, le=MAX_SEED), BeforeValidator(_integral)]
ImageCount = Annotated[int, Field(ge=1, le=MAX_N), BeforeValidator(_integral)]
MaxImages = Annotated[int, Field(ge=1, le=MAX_IMAGES_PER_REQUEST), BeforeValidator(_integral)]


class SequentialImageGenerationOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    max_images: MaxImages | None = Field(
        default=None,
        description="Most images this request may produce, 1..15 (default 15). Read only when "
        "sequential_image_generation is auto; inputs + outputs never exceed 15.",
    )


class OptimizePromptOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    mode: Literal["standard", "fast"] | None = Field(
        default=None,
        description="standard (default) or fast (fewer steps, faster, lower quality; Seedream 4.0 and 5.0 flash).",
    )
    thinking: Literal["auto", "enabled", "disabled"] | None = Field(
        default=None,
        description="Prompt thinking: auto (default), enabled or disabled; passed to engines (and the LLM group "
        "planner) that use it.",
    )


class Tool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: Literal["web_search"] = Field(description="web_search: the model may search the web (Seedream 5.0 lite).")


class ImageGenerationRequest(BaseModel):
    """``POST /api/v3/images/generations`` (and ``/v1/images/generations``)."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: Text = Field(
        description="A served model name or alias, e.g. doubao-seedream-4-0-250828.", json_schema_extra=_NON_EMPTY
    )
    prompt: Text = Field(
        json_schema_extra=_NON_EMPTY,
        description="Text prompt in Chinese or English; non-empty. Advice: at most 300 CJK characters or "
        "600 words; the hard limit is configurable (default 4000 characters).",
    )
    image: Text | list[Text] | None = Field(
        default=None,
        description="Reference image(s): http(s) URL or data:image/<fmt>;base64,<data> with lowercase <fmt>; "
        "a string or a list of up to 14.",
    )
    size: Text | None = Field(
        default=None,
        description="1K, 2K, 4K (aspect ratio from the prompt or the first reference) or <W>x<H> with "
        "921600 <= W*H <= 16777216 and 1/16 <= W/H <= 16. Default 2048x2048.",
    )
    sequential_image_generation: Literal["auto", "disabled"] | None = Field(
        default=None,
        description="auto: the prompt decides how many related images (group, up to max_images); "
        "disabled (default): one image.",
    )
    sequential_image_generation_options: SequentialImageGenerationOptions | None = Field(
        default=None, description="Group options; read only when sequential_image_generation is auto."
    )
    stream: bool | None = Field(
        default=None, description="true: server-sent events, one per image as soon as it is stored."
    )
    response_format: Literal["url", "b64_json"] | None = Field(
        default=None, description="url (default; signed link valid 24 h) or b64_json. Images are JPEG."
    )
    watermark: bool | None = Field(default=None, description='true (default): visible "AI生成" mark bottom-right.')
    seed: Seed | None = Field(
        default=None,
        description="-1 (default) = random. The same seed and inputs give the same images on one engine.",
    )
    guidance_scale: float | None = Field(
        default=None, ge=0, le=30, description="Prompt adherence, passed to engines that use it."
    )
    optimize_prompt: bool | None = Field(default=None, description="Accepted for Ark SDK compatibility.")
    optimize_prompt_options: OptimizePromptOptions | None = Field(
        default=None, description="Prompt optimisation options; mode fast may trade quality for speed."
    )
    n: ImageCount | None = Field(
        default=None,
        description="OpenAI extension: number of independent images when sequential generation is "
        "disabled (default 1). Ignored in auto mode.",
        json_schema_extra=_EXT,
    )
    quality: Text | None = Field(
        default=None, max_length=64, description="OpenAI extension: accepted and ignored.", json_schema_extra=_EXT
    )
    style: Text | None = Field(
        default=None, max_length=64, description="OpenAI extension: accepted and ignored.", json_schema_extra=_EXT
    )
    user: Text | None = Field(
        default=None,
        max_length=256,
        description="OpenAI extension: end-user id (at most 256 characters), logged.",
        json_schema_extra=_EXT,
    )
    output_format: Literal["jpeg", "png", "webp"] | None = Field(
        default=None,
        description="jpeg (default) or png (Seedream 5.0); webp as an OpenAI extension where the model's profile "
        "allows it.",
        json_schema_extra=_EXT,
    )
    tools: list[Tool] | None = Field(
        default=None, description='Seedream 5.0 lite: [{"type": "web_search"}] lets the model search the web.'
    )
    layer_decomposition: bool | None = Field(
        default=None,
        description="Seedream 5.0 pro: a base image plus up to 16 transparent PNG layers, each item with z_index, "
        "bounding_box, name and description.",
    )


class ErrorBody(BaseModel):
    code: str
    message: str
    param: str | None = None
    type: str | None = None


class BoundingBox(BaseModel):
    absolute: list[int] = Field(description="[x0, y0, x1, y1] in pixels of the base image.")
    normalized: list[float] = Field(description="[x0, y0, x1, y1] as fractions of the base image's size.")


class ImageItem(BaseModel):
    url: str | None = Field(default=None, description="Signed link to the image (response_format url).")
    b64_json: str | None = Field(default=None, description="Base64 image bytes (response_format b64_json).")
    size: str | None = Field(default=None, description="Delivered size, <W>x<H>.")
    error: ErrorBody | None = Field(default=None, description="Set instead of url/b64_json when this image failed.")
    # layer decomposition (Seedream 5.0 pro): the base image has z_index 0, layers 1..16
    z_index: int | None = Field(default=None, description="Layer decomposition: 0 = base image, then the layers.")
    bounding_box: BoundingBox | None = Field(default=None, description="Layer decomposition: where the layer is.")
    name: str | None = Field(default=None, description="Layer decomposition: the layer's name.")
    description: str | None = Field(default=None, description="Layer decomposition: what the layer shows.")
    output_format: str | None = Field(default=None, description="Layer decomposition: png.")


class ToolUsage(BaseModel):
    web_search: int = Field(description="Web searches the model made.")


class Usage(BaseModel):
    generated_images: int = Field(description="Images delivered (failures not counted).")
    output_tokens: int = Field(description="Sum over delivered images of width*height/256.")
    total_tokens: int = Field(description="Equal to output_tokens.")
    input_images: int = Field(default=0, description="Reference images of the request.")
    tool_usage: ToolUsage | None = Field(default=None, description="With tools: how often each was used.")


class ImagesResponse(BaseModel):
    model: str
    created: int = Field(description="Unix seconds.")
    created_at: int = Field(description="The same as created (the Ark SDK reads this name).")
    data: list[ImageItem]
    usage: Usage
    tools: list[Tool] | None = Field(default=None, description="The request's tools, echoed.")


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- server-sent events of a streamed request (SPEC §7), in wire order ---------------------------------


class PartialSucceededEvent(BaseModel):
    type: Literal["image_generation.partial_succeeded"] = "image_generation.partial_succeeded"
    model: str
    created: int
    created_at: int
    image_index: int
    url: str | None = None
    b64_json: str | None = None
    size: str
    z_index: int | None = None
    bounding_box: BoundingBox | None = None
    name: str | None = None
    description: str | None = None
    output_format: str | None = None


class PartialFailedEvent(BaseModel):
    type: Literal["image_generation.partial_failed"] = "image_generation.partial_failed"
    model: str
    created: int
    created_at: int
    image_index: int
    error: ErrorBody


class CompletedEvent(BaseModel):
    type: Literal["image_generation.completed"] = "image_generation.completed"
    model: str
    created: int
    created_at: int
    usage: Usage


class StreamErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorBody


ImageItem.model_rebuild()


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request with defaults applied: the service's input."""

    model: str
    prompt: str
    images: tuple[str | bytes, ...] = ()  # URLs or data URIs (JSON), uploaded files (multipart edits)
    size: str = "2048x2048"
    sequential: bool = False
    max_images: int = MAX_IMAGES_PER_REQUEST
    n: int = 1
    stream: bool = False
    response_format: str = "url"
    watermark: bool = True
    seed: int = -1
    guidance_scale: float | None = None
    fast: bool = False
    output_format: str = "jpeg"
    user: str | None = None
    tools: tuple[str, ...] = ()  # tool types, e.g. ("web_search",)
    thinking: str | None = None
    layer_decomposition: bool = False
    #: every wire field as the client sent it (unknown ones too, ``model`` aside), for engines that relay
    fields: Mapping[str, Any] = field(default_factory=dict)


def to_generation_request(body: ImageGenerationRequest) -> GenerationRequest:
    """Apply defaults and the checks pydantic cannot express (no I/O)."""
    if not body.model.strip():
        raise MissingParameter(
            "The request failed because it is missing one or multiple required parameters: model.", param="model"
        )
    if not body.prompt.strip():
        raise InvalidParameter("The parameter `prompt` must not be empty.", param="prompt")
    images: tuple[str, ...]
    if body.image is None:
        images = ()
    elif isinstance(body.image, str):
        images = (body.image,)
    else:
        images = tuple(body.image)
    options = body.sequential_image_generation_options
    return GenerationRequest(
        model=body.model,
        prompt=body.prompt,
        images=images,
        size=body.size if body.size is not None else "2048x2048",
        sequential=body.sequential_image_generation == "auto",
        max_images=(options.max_images if options and options.max_images else MAX_IMAGES_PER_REQUEST),
        n=body.n or 1,
        stream=bool(body.stream),
        response_format=body.response_format or "url",
        watermark=True if body.watermark is None else body.watermark,
        seed=-1 if body.seed is None else body.seed,
        guidance_scale=body.guidance_scale,
        fast=bool(body.optimize_prompt_options and body.optimize_prompt_options.mode == "fast"),
        output_format=body.output_format or "jpeg",
        user=body.user,
        tools=tuple(tool.type for tool in body.tools or ()),
        thinking=body.optimize_prompt_options.thinking if body.optimize_prompt_options else None,
        layer_decomposition=bool(body.layer_decomposition),
        fields={k: v for k, v in body.model_dump(exclude_unset=True).items() if k != "model"},
    )


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
            return _integral(float(raw)) if "." in raw or "e" in raw.lower() else int(raw)
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


_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def _param_of(loc: tuple[int | str, ...]) -> str:
    """``("body", "image", 2)`` -> ``image[2]``; pydantic's union branch labels (``str``,
    ``function-after[_utf8(), str]``, ``list[...]``) are not field names and are skipped."""
    out = ""
    for part in (str(p) for p in loc if p != "body"):
        if part.isdigit():
            out += f"[{part}]"
        elif _FIELD_NAME.match(part) and part not in {"str", "int"}:
            out += ("." if out else "") + part
    return out


def translate_validation_error(exc: ValidationError | Any) -> SeedreamError:
    """Turn the first pydantic/FastAPI validation error into an Ark error naming the field."""
    errors = exc.errors()
    if not errors:
        return InvalidParameter("The request body is not valid.")
    # the first field's most specific error: for ``image: ["ok", 5]`` the list branch's image[1], not "a string"
    first_field = _param_of(tuple(errors[0].get("loc", ())))
    err = max(
        (e for e in errors if _param_of(tuple(e.get("loc", ()))).startswith(first_field)),
        key=lambda e: len(_param_of(tuple(e.get("loc", ())))),
    )
    loc = tuple(err.get("loc", ()))
    param = _param_of(loc)
    kind = err.get("type", "")
    if kind == "json_invalid":
        return InvalidParameter("The request body is not valid JSON.")
    if not param:
        return InvalidParameter("The request body must be a JSON object.")
    if kind == "missing" or (err.get("input", ...) is None and param in {"model", "prompt"}):
        return MissingParameter(
            f"The request failed because it is missing one or multiple required parameters: {param}.",
            param=param,
        )
    return InvalidParameter(  # param names the field (image), the message the item (image[2])
        f"The parameter `{param}` specified in the request is not valid: {err.get('msg', 'invalid value')}.",
        param=re.sub(r"\[\d+\]", "", param),
    )
