"""The reasons a reference image is refused, and their translation to the API's 400.

Inside the package a refusal is a :class:`ReferenceRejected` whose text is the reason without the index;
at the package's edge (:mod:`.load`, :mod:`.decoder`) it becomes an
:class:`~seedream_server.errors.InvalidParameter` with ``param="image"`` and a message ``image[<i>]: <reason>``.
"""

from __future__ import annotations

import re

from seedream_server.errors import InvalidParameter

__all__ = ["ReferenceRejected", "UnsafeAddress", "invalid_reference", "not_a_reference", "short"]

SHAPE = "a reference is an http(s) URL or data:image/<format>;base64,<data>"
PREFIX_CHARS = 24  # at most this much of what a client sent is echoed back
_BARE_BASE64 = re.compile(r"[A-Za-z0-9+/=\r\n]{32,}")  # base64 may be wrapped in lines, never spaced
_FILE_NAME = re.compile(r"(?:[A-Za-z]:)?[^:]*\.(png|jpe?g|webp|bmp|gif|tiff?|heic|avif)", re.IGNORECASE)


class ReferenceRejected(ValueError):
    """A reference was refused; ``str(exc)`` is the reason, without the index."""


class UnsafeAddress(ReferenceRejected):
    """:func:`~seedream_server.references.check_address` refused an address (request forgery guard)."""


def invalid_reference(index: int, reason: str | BaseException) -> InvalidParameter:
    """The 400 for reference ``index``: ``InvalidParameter("image[<index>]: <reason>", param="image")``."""
    return InvalidParameter(f"image[{index}]: {reason}", param="image")


def short(text: str, limit: int = PREFIX_CHARS) -> str:
    """A short, quoted prefix of client text for an error message (never the whole of a 4 MB input)."""
    return repr(text[:limit] + "…") if len(text) > limit else repr(text)


def not_a_reference(text: str, scheme: str) -> ReferenceRejected:
    """The refusal of an ``image`` string that is neither an http(s) URL nor a data URI: what it looks like
    (bare base64, a file name, another scheme) and what a reference must look like."""
    if not scheme and _BARE_BASE64.fullmatch(text):
        return ReferenceRejected(f"unsupported scheme: {short(text)} looks like bare base64; {SHAPE}")
    if len(scheme) <= 1 and _FILE_NAME.fullmatch(text):  # "C:/..." parses as the scheme "c"
        return ReferenceRejected(
            f"unsupported scheme: {short(text)} looks like a file name, and the server cannot read client files; "
            f"{SHAPE} (a file's bytes, base64-encoded), or upload files to /v1/images/edits"
        )
    if not scheme:
        return ReferenceRejected(f"unsupported scheme: {short(text)} is not a URL; {SHAPE}")
    return ReferenceRejected(f"unsupported scheme {short(scheme, 16)}; {SHAPE}")
