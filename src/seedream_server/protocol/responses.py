"""Response wire models: the JSON images response and the server-sent events of a stream (SPEC §6-7), in
wire order. The HTTP layer builds every response from these, so the OpenAPI document cannot drift."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .requests import Tool


class ErrorBody(BaseModel):
    code: str
    message: str
    param: str | None = None
    type: str | None = None


class BoundingBox(BaseModel):
    absolute: list[int] = Field(description="[x0, y0, x1, y1] in pixels of the base image.")
    normalized: list[int] = Field(description="[x0, y0, x1, y1] scaled to integers from 0 to 1000 of the base image.")


class ImageItem(BaseModel):
    url: str | None = Field(default=None, description="Signed link to the image (response_format url).")
    b64_json: str | None = Field(default=None, description="Base64 image bytes (response_format b64_json).")
    size: str | None = Field(default=None, description="Delivered size, <W>x<H>.")
    error: ErrorBody | None = Field(default=None, description="Set instead of url/b64_json when this image failed.")
    # layer decomposition (Seedream 5.0 pro): the base image has z_index 0, layers 1..16
    z_index: int | None = Field(default=None, description="Layer decomposition: 0 = base image, then the layers.")
    bounding_box: BoundingBox | None = Field(
        default=None, description="Layer decomposition: where the layer is (omitted for the base image)."
    )
    name: str | None = Field(default=None, description="Layer decomposition: the layer's name (not for the base).")
    description: str | None = Field(
        default=None, description="Layer decomposition: what the layer shows (not for the base)."
    )
    output_format: str | None = Field(default=None, description="Layer decomposition: png.")


class ToolUsage(BaseModel):
    web_search: int = Field(description="Web searches the model made.")


class Usage(BaseModel):
    generated_images: int = Field(description="Images delivered (failures not counted).")
    output_tokens: int = Field(description="Sum over delivered images of width*height/256.")
    total_tokens: int = Field(description="Equal to output_tokens.")
    input_images: int = Field(default=0, description="Reference images of the request.")
    tool_usage: ToolUsage | None = Field(default=None, description="With tools: how often each was used.")


class InputTokensDetails(BaseModel):
    image_tokens: int = Field(default=0, description="Not metered: 0.")
    text_tokens: int = Field(default=0, description="Not metered: 0.")


class OpenAIUsage(Usage):
    """``usage`` on the OpenAI routes: Ark's fields, then OpenAI's image usage (``input_tokens``,
    ``input_tokens_details``, ``output_tokens``, ``total_tokens``), which clients such as LiteLLM require.
    Seedream bills output images only, so input tokens are not metered and read 0."""

    input_tokens: int = Field(default=0, description="Not metered: 0.")
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)


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
