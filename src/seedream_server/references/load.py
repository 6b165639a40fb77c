"""Step 2 of a request: the request's ``image`` items (and uploads) to checked references.

Pipeline of :func:`fetch_references`::

    (how many references a request may have is checked once, by the service, against the model's limit)
    1. parse      every item, no I/O: a data URI (lowercase format, base64 with RFC 2045 white space,
                  sniffed format == declared format) or upload is inspected at once
                  (:func:`~.header.inspect_image`); a URL is parsed and guarded (:func:`~.guard.parse_target`)
    2. fetch      URLs concurrently in one TaskGroup (:class:`~.fetch.Fetcher`), then inspected

then, for :func:`load_references` only, 3. decode (:class:`~.decoder.ReferenceDecoder`, or threads).

Any failure is an :class:`~seedream_server.errors.InvalidParameter` with ``param="image"`` and a
message ``image[<index>]: <reason>``; the first failure cancels every other fetch and decode, so a
request never proceeds with a partial set of references.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, Literal, TypeVar

from PIL import Image

from .decode import decode_reference
from .decoder import ReferenceDecoder
from .errors import ReferenceRejected, invalid_reference
from .fetch import ClientFactory, Fetcher, default_client, parse_data_uri, system_resolve
from .guard import Resolver, parse_target
from .header import inspect_image
from .policy import FetchedReference, ImageFormat, Reference, ReferencePolicy

__all__ = ["fetch_references", "load_references"]

_T = TypeVar("_T")
Source = Literal["data", "url", "upload"]


class _Failed(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(index, reason)
        self.index = index
        self.reason = reason


def _fetched(index: int, data: bytes, policy: ReferencePolicy, declared: ImageFormat | None = None) -> FetchedReference:
    fmt, width, height = inspect_image(data, declared, policy)
    return FetchedReference(index, data, fmt, width, height)


def _parse(index: int, item: object, policy: ReferencePolicy) -> FetchedReference | str:
    """A data URI or upload, inspected; or a URL, parsed and guarded (returned as is). No I/O."""
    if isinstance(item, bytes | bytearray | memoryview):
        return _fetched(index, bytes(item), policy)
    if not isinstance(item, str) or not item:
        raise ReferenceRejected("each image must be a non-empty string")
    if item[:5].lower() == "data:":
        data, declared = parse_data_uri(item, policy)
        return _fetched(index, data, policy, declared)
    parse_target(item, policy.allowlist)
    return item


async def _first_failure(jobs: Sequence[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run ``jobs`` concurrently; on a refusal, cancel the rest and raise the lowest failing index's 400."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(job) for job in jobs]
    except BaseExceptionGroup as group_error:
        failures = [e for e in group_error.exceptions if isinstance(e, _Failed)]
        if failures:
            first = min(failures, key=lambda e: e.index)
            raise invalid_reference(first.index, first.reason) from first.__cause__
        raise group_error.exceptions[0] from group_error
    return [task.result() for task in tasks]


async def fetch_references(
    items: Sequence[str | bytes],
    policy: ReferencePolicy,
    *,
    client_factory: ClientFactory | None = None,
    resolver: Resolver | None = None,
) -> list[FetchedReference]:
    """The request's references, in order, fetched and checked but still compressed.

    Each item is a ``data:image/<format>;base64,`` URI, an http(s) URL, or the bytes of an uploaded file.
    ``client_factory`` builds the httpx client used for URLs (default: no environment proxies, no
    keep-alive); a custom one must not use a proxy, or the address pinning is lost. ``resolver``
    replaces the one ``loop.getaddrinfo`` call per host (tests use it to map names to 127.0.0.1).
    Raises :class:`InvalidParameter` (``param="image"``) naming the first failing index. How many references
    a request may have is the service's one check (it knows the model's limit).
    """
    parsed: list[FetchedReference | str] = []
    for index, item in enumerate(items):
        try:
            parsed.append(_parse(index, item, policy))
        except ReferenceRejected as exc:
            raise invalid_reference(index, exc) from exc
    if all(isinstance(entry, FetchedReference) for entry in parsed):
        return [entry for entry in parsed if isinstance(entry, FetchedReference)]

    client = (client_factory or default_client)()
    fetcher = Fetcher(client, policy, resolver or system_resolve)

    async def one(index: int, entry: FetchedReference | str) -> FetchedReference:
        if isinstance(entry, FetchedReference):
            return entry
        try:
            return _fetched(index, await fetcher.fetch(entry), policy)
        except ReferenceRejected as exc:
            raise _Failed(index, str(exc)) from exc

    try:
        return await _first_failure([one(i, e) for i, e in enumerate(parsed)])
    finally:
        await client.aclose()


async def _decode_in_threads(refs: Sequence[FetchedReference], max_pixels: int | None) -> list[Image.Image]:
    async def one(ref: FetchedReference) -> Image.Image:
        try:
            return await asyncio.to_thread(decode_reference, ref.data, ref.format, max_pixels)
        except ReferenceRejected as exc:
            raise _Failed(ref.index, str(exc)) from exc

    return await _first_failure([one(ref) for ref in refs])


def _source(item: object) -> Source:
    if not isinstance(item, str):
        return "upload"
    return "data" if item[:5].lower() == "data:" else "url"


async def load_references(
    value: str | Sequence[str | bytes] | None,
    policy: ReferencePolicy,
    *,
    client_factory: ClientFactory | None = None,
    resolver: Resolver | None = None,
    decoder: ReferenceDecoder | None = None,
    max_pixels: int | None = None,
) -> list[Reference]:
    """Fetch and decode in one call: :func:`fetch_references`, then ``decoder`` (default: worker threads,
    without a time budget). Images are RGB, downscaled to ``max_pixels`` if given."""
    if value is None:
        return []
    items: Sequence[str | bytes] = [value] if isinstance(value, str) else value
    fetched = await fetch_references(items, policy, client_factory=client_factory, resolver=resolver)
    if decoder is not None:
        images = await decoder.decode(fetched, max_pixels)
    else:
        images = await _decode_in_threads(fetched, max_pixels)
    return [
        Reference(ref.index, image, ref.format, image.width, image.height, _source(items[ref.index]))
        for ref, image in zip(fetched, images, strict=True)
    ]
