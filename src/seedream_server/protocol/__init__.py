"""Wire models for the Ark and OpenAI image APIs (requests AND responses), and their conversion into the
service's :class:`GenerationRequest`: ``requests`` (JSON bodies), ``forms`` (the multipart edits form),
``responses`` (JSON and stream events), ``validation`` (errors naming the field). No I/O happens here.
"""

from .forms import ImageEditForm, edit_form_to_request
from .requests import (
    MAX_IMAGES_PER_REQUEST,
    MAX_N,
    MAX_SEED,
    GenerationRequest,
    ImageCount,
    ImageGenerationRequest,
    MaxImages,
    OptimizePromptOptions,
    Seed,
    SequentialImageGenerationOptions,
    Text,
    Tool,
    to_generation_request,
)
from .responses import (
    BoundingBox,
    CompletedEvent,
    ErrorBody,
    ErrorResponse,
    ImageItem,
    ImagesResponse,
    InputTokensDetails,
    OpenAIUsage,
    PartialFailedEvent,
    PartialSucceededEvent,
    StreamErrorEvent,
    ToolUsage,
    Usage,
)
from .validation import translate_validation_error

__all__ = [
    "MAX_IMAGES_PER_REQUEST",
    "MAX_N",
    "MAX_SEED",
    "BoundingBox",
    "CompletedEvent",
    "ErrorBody",
    "ErrorResponse",
    "GenerationRequest",
    "ImageCount",
    "ImageEditForm",
    "ImageGenerationRequest",
    "ImageItem",
    "ImagesResponse",
    "InputTokensDetails",
    "MaxImages",
    "OpenAIUsage",
    "OptimizePromptOptions",
    "PartialFailedEvent",
    "PartialSucceededEvent",
    "Seed",
    "SequentialImageGenerationOptions",
    "StreamErrorEvent",
    "Text",
    "Tool",
    "ToolUsage",
    "Usage",
    "edit_form_to_request",
    "to_generation_request",
    "translate_validation_error",
]
