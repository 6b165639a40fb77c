"""The reasons a reference image is refused, and their translation to the API's 400.

Inside the package a refusal is a :class:`ReferenceRejected` whose text is the reason without the index;
at the package's edge (:mod:`.load`, :mod:`.decoder`) it becomes an
:class:`~seedream_server.errors.InvalidParameter` with ``param="image"`` and a message ``image[<i>]: <reason>``.
"""

from __future__ import annotations

from seedream_server.errors import InvalidParameter

__all__ = ["ReferenceRejected", "UnsafeAddress", "invalid_reference"]


class ReferenceRejected(ValueError):
    """A reference was refused; ``str(exc)`` is the reason, without the index."""


class UnsafeAddress(ReferenceRejected):
    """:func:`~seedream_server.references.check_address` refused an address (request forgery guard)."""


def invalid_reference(index: int, reason: str | BaseException) -> InvalidParameter:
    """The 400 for reference ``index``: ``InvalidParameter("image[<index>]: <reason>", param="image")``."""
    return InvalidParameter(f"image[{index}]: {reason}", param="image")
