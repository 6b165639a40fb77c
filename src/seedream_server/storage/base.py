"""The storage plug point: durable writes that return a link clients can fetch later, and the read side
that serves such a link (so the HTTP layer never depends on one backend)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

#: image names are ``<32 hex>_<index>.<ext>``: nothing else is ever read or written
IMAGE_NAME_PATTERN = re.compile(r"^([0-9a-f]{32}_[0-9]{1,2})\.(jpeg|png|webp)\Z")

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def content_type(name: str) -> str:
    """The media type of a valid image name (by its extension)."""
    match = IMAGE_NAME_PATTERN.match(name)
    if match is None:
        raise ValueError(f"invalid image name {name!r}")
    return CONTENT_TYPES[match.group(2)]


@dataclass(frozen=True)
class StoredImage:
    """A durably written image and the link that serves it."""

    name: str
    url: str


@dataclass(frozen=True)
class ImageFile:
    """A stored image found through a valid link, ready to be served: a local ``path``, or a ``body`` streamed
    from elsewhere (a bucket) in chunks, ``size`` bytes long. Whoever takes a ``body`` must close it
    (``aclose``), read to the end or not."""

    name: str
    content_type: str
    path: Path | None = None
    body: AsyncGenerator[bytes, None] | None = None
    size: int | None = None


class Storage(ABC):
    """Durable image store. ``put`` returns only after the bytes are durable."""

    @abstractmethod
    async def put(self, name: str, data: bytes) -> StoredImage:
        """Write ``data`` under ``name`` (matching IMAGE_NAME_PATTERN) and return its link."""

    @abstractmethod
    def url(self, name: str) -> str:
        """A fresh link to the stored image ``name`` (as ``put`` stored it; a store may need the locator of
        its links, e.g. ``YYYY/MM/DD/name`` for S3), valid for the store's link lifetime."""

    @abstractmethod
    async def open(self, name: str, expires: str | None, signature: str | None) -> ImageFile:
        """The image behind a link: 404 for unknown or deleted names, 403 for a bad or expired signature."""

    async def sweep(self) -> int:
        """Delete images past retention; return how many were deleted."""
        return 0

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
