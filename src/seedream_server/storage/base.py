"""The storage plug point: durable writes that return a URL clients can fetch later."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

#: image names are ``<32 hex>_<index>.<ext>``: nothing else is ever read or written
NAME_PATTERN = re.compile(r"^([0-9a-f]{32}_[0-9]{1,2})\.(jpeg|png|webp)\Z")

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


@dataclass(frozen=True)
class StoredImage:
    """A durably written image and the link that serves it."""

    name: str
    url: str
    expires: int


class Storage(ABC):
    """Durable image store. ``put`` returns only after the bytes are durable."""

    @abstractmethod
    async def put(self, name: str, data: bytes) -> StoredImage:
        """Write ``data`` under ``name`` (matching NAME_PATTERN) and return its link."""

    async def sweep(self) -> int:
        """Delete images past retention; return how many were deleted."""
        return 0

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
