"""What a running job yields, one event per image and then one final event; the HTTP layer renders them
as a JSON body or as server-sent events."""

from __future__ import annotations

from dataclasses import dataclass

from .engines.base import Layer
from .errors import SeedreamError


@dataclass(frozen=True)
class ImageDelivered:
    """An image finished and stored (``url``) or inlined (``b64_json``)."""

    index: int
    width: int
    height: int
    url: str | None = None
    b64_json: str | None = None
    layer: Layer | None = None  # layer decomposition: the item's place in the stack
    output_format: str | None = None  # set for layer items (png)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class ImageFailed:
    """One image of the job was refused (content filter); the rest of the group goes on."""

    index: int
    error: SeedreamError


@dataclass(frozen=True)
class JobUsage:
    """What a job delivered: images and their tokens (SPEC §6)."""

    generated_images: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class JobCompleted:
    usage: JobUsage


@dataclass(frozen=True)
class JobAborted:
    """An internal failure stopped the job; images already delivered stay delivered."""

    error: SeedreamError
    usage: JobUsage


Event = ImageDelivered | ImageFailed | JobCompleted | JobAborted
