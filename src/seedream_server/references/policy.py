"""Limits for reference images and the plain types that carry a reference through the pipeline.

:class:`ReferencePolicy` holds every limit (SPEC §4's defaults); :class:`FetchedReference` is a reference
fetched and checked but still compressed (what a job holds while it waits); :class:`Reference` is one
decoded to RGB (what :func:`~seedream_server.references.load_references` returns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from PIL import Image

from .guard import AllowEntry, parse_allowlist

if TYPE_CHECKING:
    from seedream_server.config import Settings

__all__ = [
    "FORMATS",
    "MAX_JPEG_SCANS",
    "FetchedReference",
    "ImageFormat",
    "Reference",
    "ReferencePolicy",
]

ImageFormat = Literal["jpeg", "png", "webp", "bmp", "tiff", "gif"]
FORMATS: Final[tuple[ImageFormat, ...]] = ("jpeg", "png", "webp", "bmp", "tiff", "gif")

MAX_JPEG_SCANS: Final = 100
"""More scans than any encoder writes: libjpeg's progressive mode writes about 10, custom jpegtran scripts a
few dozen. Each scan costs a pass over every coefficient of the image, so thousands of them are an attack."""


@dataclass(frozen=True)
class ReferencePolicy:
    """Limits for reference images; the defaults are SPEC §4's."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 36_000_000
    min_side: int = 15
    min_ratio: float = 1 / 16
    max_ratio: float = 16.0
    max_count: int = 14
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    max_redirects: int = 3
    allowlist: tuple[AllowEntry, ...] = field(default=())
    max_jpeg_scans: int = MAX_JPEG_SCANS

    @classmethod
    def from_settings(cls, settings: Settings, *, max_count: int = 14) -> ReferencePolicy:
        """The policy a server runs with: byte cap, read timeout and allowlist come from settings.

        The decoding settings (``reference_decode_workers``, ``reference_decode_timeout_s``) configure a
        :class:`~seedream_server.references.ReferenceDecoder` (see its ``from_settings``), not the policy.
        """
        return cls(
            max_bytes=settings.reference_max_bytes,
            read_timeout=settings.reference_timeout_s,
            allowlist=parse_allowlist(settings.reference_allowlist),
            max_count=max_count,
        )


@dataclass(frozen=True)
class FetchedReference:
    """A reference fetched (or uploaded) and checked, still compressed.

    ``format`` is the sniffed format; ``width`` and ``height`` come from the header, as displayed (EXIF
    orientation applied), and passed the policy's size limits; the bytes passed the structural checks
    (JPEG scan count and data size). Pixels are decoded only by
    :meth:`~seedream_server.references.ReferenceDecoder.decode`.
    """

    index: int
    data: bytes
    format: ImageFormat
    width: int
    height: int


@dataclass(frozen=True)
class Reference:
    """One checked reference image, decoded to RGB (orientation applied, alpha on white)."""

    index: int
    image: Image.Image
    format: ImageFormat
    width: int
    height: int
    source: Literal["data", "url", "upload"]
