"""Upstream images into results: decoded for re-hosting (fetched under a byte cap and the call's timeouts
when the upstream gave a link), or passed through as they are.

Upstream links are trusted configuration, not user input (no address guard), but they are fetched without
the upstream's key, with a byte cap and with timeouts all the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io

import httpx
from PIL import Image

from ...sizes import dimensions
from ..base import ImageResult
from .errors import malformed, transport_error

#: largest upstream image accepted (a 4K PNG is about 50 MB)
MAX_IMAGE_BYTES = 64 * 1024 * 1024


def b64_bytes(b64: str) -> bytes:
    try:
        return base64.b64decode(b64, validate=False)
    except (binascii.Error, ValueError):
        raise malformed("an image that is not valid base64") from None


def _decode(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        raise malformed("an image that cannot be decoded") from None
    return image


async def decode_image(data: bytes) -> Image.Image:
    """Decode upstream image bytes off the event loop."""
    return await asyncio.to_thread(_decode, data)


def header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image's header (no decoding), or None when unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, ValueError):
        return None


async def fetch_image(client: httpx.AsyncClient, url: str, timeout_s: float, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes behind an upstream image link (no credentials sent), at most ``max_bytes``."""
    try:
        async with client.stream("GET", url, timeout=timeout_s) as response:
            if response.status_code != 200:
                raise malformed(f"an image link that answered {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise malformed(f"an image larger than {max_bytes} bytes")
            chunks, total = [], 0
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise malformed(f"an image larger than {max_bytes} bytes")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise transport_error(exc, timeout_s).error from None
    return b"".join(chunks)


async def image_result(
    index: int,
    item: dict[str, object],
    *,
    client: httpx.AsyncClient,
    rehost: bool,
    timeout_s: float,
    watermarked: bool = False,
    request_id: str | None = None,
    fallback_size: tuple[int, int] = (0, 0),
) -> ImageResult:
    """The result for one upstream data item (``url`` or ``b64_json``, maybe ``size``)."""
    url, b64 = item.get("url"), item.get("b64_json")
    if not isinstance(url, str | None) or not isinstance(b64, str | None) or (url is None and b64 is None):
        raise malformed("an image item without url or b64_json")
    if rehost:
        data = b64_bytes(b64) if b64 is not None else await fetch_image(client, str(url), timeout_s)
        image = await decode_image(data)
        return ImageResult(index, image=image, watermarked=watermarked, upstream_request_id=request_id)
    size = dimensions(item.get("size"))
    if size is None and b64 is not None:
        size = header_size(b64_bytes(b64))
    passed = {"url": url} if url is not None else {"b64_json": b64}
    return ImageResult(index, **passed, size=size or fallback_size, upstream_request_id=request_id)
