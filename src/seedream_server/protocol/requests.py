"""Request wire models (Ark's ``POST /api/v3/images/generations``, OpenAI's extras) and their conversion into
the service's :class:`GenerationRequest`.

Fields follow the upstream order (Ark first, then OpenAI extras, marked ``x-extension``). Types are strict:
a string where an integer is expected is an error, never silently converted (integral floats such as
``3.0`` are integers, as in JSON Schema). ``null`` means "use the default" for every optional field (the Ark
SDK sends explicit nulls). Unknown fields are kept in ``model_extra`` (and in ``GenerationRequest.fields``
for engines that relay the request). No I/O happens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ..errors import InvalidParameter, MissingParameter
from ..sizes import DEFAULT_SIZE

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


def integral(value: Any) -> Any:
    """JSON Schema integers include ``3.0``: accept an integral float as that integer (``3.5`` stays an error)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: a string field: valid UTF-8
Text = Annotated[str, AfterValidator(_utf8)]
#: integer fields, which also take integral floats as JSON Schema does
Seed = Annotated[int, Field(ge=-1, le=MAX_SEED), BeforeValidator(integral)]
ImageCount = Annotated[int, Field(ge=1, le=MAX_N), BeforeValidator(integral)]
MaxImages = Annotated[int, Field(ge=1, le=MAX_IMAGES_PER_REQUEST), BeforeValidator(integral)]


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


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request with defaults applied: the service's input."""

    model: str
    prompt: str
    images: tuple[str | bytes, ...] = ()  # URLs or data URIs (JSON), uploaded files (multipart edits)
    size: str = DEFAULT_SIZE
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
        size=body.size if body.size is not None else DEFAULT_SIZE,
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
