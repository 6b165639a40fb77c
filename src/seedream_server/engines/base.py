"""The engine plug point: the ``Engine`` ABC and the plain data that crosses it.

An engine receives one :class:`ImageJob` (a whole request: one image or a group) and yields one
:class:`ImageResult` per image, in index order, as soon as each is ready. A per-image refusal
(content filter) is a result whose ``error`` is set and the group goes on; an internal failure is
raised (``EngineError``) and stops the group. Engines never see HTTP, wire models or storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from PIL import Image

from ..errors import SeedreamError

#: pixels a decoded reference image is reduced to when an engine does not say what it uses
DEFAULT_REFERENCE_PIXELS = 2048 * 2048


class ReferenceMode(StrEnum):
    """How an engine takes the request's reference images."""

    DECODED = "decoded"  # fetched, checked and decoded here (local models): ImageJob.references
    ENCODED = "encoded"  # fetched and checked here, handed over as file bytes: ImageJob.encoded_references
    FORWARDED = "forwarded"  # not fetched here: the strings as sent (uploads as data URIs), ImageJob.forwarded


@dataclass(frozen=True)
class EngineCapabilities:
    """What a model served by an engine accepts, beyond its Seedream profile (``profiles.py``, which owns
    sizes and fields); the service validates requests against both."""

    max_references: int = 14
    reference_pixels: int = DEFAULT_REFERENCE_PIXELS  # references are decoded down to this many pixels
    references: ReferenceMode = ReferenceMode.DECODED
    plans_groups: bool = False  # the engine (its upstream) decides a group's images (and sizes): no planning here
    layer_decomposition: bool = False  # it can answer layer_decomposition requests (ImageResult.layer)
    description: str = ""


@dataclass(frozen=True)
class EncodedImage:
    """A checked reference image as its file bytes (format sniffed, size from the header)."""

    data: bytes
    format: str
    width: int
    height: int


@dataclass(frozen=True)
class ImageTask:
    """One image of a job: its position in the group, its own prompt and seed."""

    index: int
    prompt: str
    seed: int


@dataclass(frozen=True)
class ImageJob:
    """Everything an engine needs to produce the images of one request."""

    model: str
    tasks: tuple[ImageTask, ...]
    width: int
    height: int
    references: tuple[Image.Image, ...] = ()
    guidance_scale: float | None = None
    fast: bool = False
    group: bool = False
    request_id: str = ""
    base_prompt: str = ""
    encoded_references: tuple[EncodedImage, ...] = ()
    forwarded: tuple[str, ...] = ()  # references as the request gave them (ReferenceMode.FORWARDED)
    #: the request's wire fields as the client sent them, unknown ones included (for engines that relay it)
    fields: Mapping[str, Any] = field(default_factory=dict)
    watermark: bool = True
    response_format: str = "url"
    layer_decomposition: bool = False  # a base image plus transparent layers (ImageResult.layer on each)


@dataclass(frozen=True)
class Layer:
    """One layer of a layer decomposition: its place in the stack and on the canvas, and what it shows.
    The base image is z_index 0; its layers (transparent PNGs of the canvas size) count up from 1."""

    z_index: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the base image
    name: str = ""
    description: str = ""


@dataclass
class ImageResult:
    """One finished image, a per-image refusal, or (relays that do not re-host) an upstream link or base64
    passed through as it is.

    ``image`` may be any size (the service resizes); ``watermarked`` says the visible mark is already drawn
    (an upstream drew it), so the service does not draw it twice.
    """

    index: int
    image: Image.Image | None = None
    error: SeedreamError | None = None
    watermarked: bool = False
    url: str | None = None  # passed through (no re-hosting)
    b64_json: str | None = None  # passed through (no re-hosting)
    size: tuple[int, int] | None = None  # of a passed-through image
    upstream_request_id: str | None = None
    layer: Layer | None = None  # set on every item of a layer decomposition (the base image too)

    @property
    def passthrough(self) -> bool:
        return self.image is None and (self.url is not None or self.b64_json is not None)


@dataclass(frozen=True)
class Progress:
    """One finished denoising step of one image (reported from an engine's worker thread)."""

    model: str
    request_id: str
    index: int
    step: int
    total: int


ProgressHook = Callable[[Progress], None]


class Engine(ABC):
    """A backend that turns jobs into images. One instance serves one configured model."""

    #: short engine kind, e.g. ``"preview"``; shown in ``/v1/models``
    kind: str = "engine"

    @property
    @abstractmethod
    def capabilities(self) -> EngineCapabilities:
        """Limits of the model this engine serves."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights or open connections; ``/readyz`` turns ready once every engine started."""

    @property
    def ready(self) -> bool:
        """Whether the engine can serve now (an upstream that cannot be reached is not); ``/readyz`` says so."""
        return True

    @abstractmethod
    def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        """Yield one result per task of ``job``, in index order, each as soon as it is ready.

        Closing the iterator early (client gone, shutdown) must stop further generation.
        """

    def add_progress_hook(self, hook: ProgressHook) -> None:  # noqa: B027 - optional hook
        """Call ``hook`` after every denoising step; engines without steps never call it. Keep hooks quick."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
