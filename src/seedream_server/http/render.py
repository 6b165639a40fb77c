"""Rendering a job's events as the response: one JSON body, or server-sent events (SPEC §6-7), built from
the protocol's response models so the OpenAPI schema and the wire cannot drift.

:class:`JobResponse` runs the job inside the response: it waits for the engine slot and the decoded
references first (an error there is still a plain JSON error), then streams or collects. A stream's job
settles when the stream ends, however it ends (client gone, client too slow to read, failure); a JSON
body is sent after its job has settled (slot free, ledger row closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..errors import ClientDisconnected, EngineError, SeedreamError
from ..events import Event, ImageDelivered, ImageFailed, JobAborted, JobCompleted, JobUsage
from ..job import Job
from ..protocol import (
    BoundingBox,
    CompletedEvent,
    ErrorBody,
    ImageItem,
    ImagesResponse,
    OpenAIUsage,
    PartialFailedEvent,
    PartialSucceededEvent,
    StreamErrorEvent,
    Tool,
    ToolUsage,
    Usage,
)
from .errors import error_response

log = logging.getLogger("seedream_server.http")

_T = TypeVar("_T")
NORMALIZED_SCALE = 1000  # Ark's normalized boxes are integers from 0 to 1000
PING_S = 15  # SSE comment lines keep idle proxies from closing a stream that waits for a slow image


def usage_of(job: Job, usage: JobUsage, openai: bool = False) -> Usage:
    """The response's usage: Ark's shape, or with ``openai`` (the OpenAI routes) OpenAI's fields added."""
    kind = OpenAIUsage if openai else Usage
    return kind(
        generated_images=usage.generated_images,
        output_tokens=usage.output_tokens,
        total_tokens=usage.output_tokens,
        input_images=len(job.request.images),
        tool_usage=ToolUsage(web_search=job.web_searches) if job.request.tools else None,
    )


def _layer_fields(event: ImageDelivered, width: int, height: int) -> dict[str, Any]:
    """The layer-decomposition fields of an item (none for an ordinary image)."""
    layer = event.layer
    if layer is None:
        return {}
    if layer.z_index == 0:  # the base image: its stacking order only, as Ark answers
        return {"z_index": 0, "output_format": event.output_format}
    x0, y0, x1, y1 = layer.box
    scale = NORMALIZED_SCALE
    box = BoundingBox(
        absolute=[x0, y0, x1, y1],
        normalized=[
            round(x0 * scale / width),
            round(y0 * scale / height),
            round(x1 * scale / width),
            round(y1 * scale / height),
        ],
    )
    return {
        "z_index": layer.z_index,
        "bounding_box": box,
        "name": layer.name,
        "description": layer.description,
        "output_format": event.output_format,
    }


def _item(job: Job, event: ImageDelivered) -> dict[str, Any]:
    width, height = job.plan.width or event.width, job.plan.height or event.height
    return {
        "url": event.url,
        "b64_json": event.b64_json,
        "size": event.size,
        **_layer_fields(event, width, height),
    }


def _failure(error: SeedreamError) -> ErrorBody:
    return ErrorBody(code=error.code, message=error.message)


def _error_event(error: SeedreamError, request_id: str) -> ServerSentEvent:
    return _sse(StreamErrorEvent.model_validate(error.envelope(request_id)))


def _sse(event: PartialSucceededEvent | PartialFailedEvent | CompletedEvent | StreamErrorEvent) -> ServerSentEvent:
    data = event.model_dump_json(exclude_none=True, serialize_as_any=True)  # an OpenAIUsage keeps its fields
    return ServerSentEvent(data=data, event=event.type, sep="\n")


async def collect(job: Job, openai: bool = False) -> ImagesResponse:
    """Non-streaming: run the whole job, then answer with data in order and usage (OpenAI's with ``openai``)."""
    data: list[ImageItem] = []
    first_failure: SeedreamError | None = None
    usage = JobUsage()
    async with contextlib.aclosing(job.events()) as events:
        async for event in events:
            if isinstance(event, ImageDelivered):
                data.append(ImageItem(**_item(job, event)))
            elif isinstance(event, ImageFailed | JobAborted):
                first_failure = first_failure or event.error
                data.append(ImageItem(error=_failure(event.error)))
                usage = event.usage if isinstance(event, JobAborted) else usage
            elif isinstance(event, JobCompleted):
                usage = event.usage
    if usage.generated_images == 0:
        raise first_failure or EngineError("No image was generated.")
    return ImagesResponse(
        model=job.request.model,
        created=job.created,
        created_at=job.created,
        data=data,
        usage=usage_of(job, usage, openai),
        tools=[Tool(type=t) for t in job.request.tools] or None,  # type: ignore[arg-type]
    )


def _stream_event(job: Job, event: Event, openai: bool) -> ServerSentEvent:
    base: dict[str, Any] = {"model": job.request.model, "created": job.created, "created_at": job.created}
    if isinstance(event, ImageDelivered):
        return _sse(PartialSucceededEvent(**base, image_index=event.index, **_item(job, event)))
    if isinstance(event, ImageFailed):
        return _sse(PartialFailedEvent(**base, image_index=event.index, error=_failure(event.error)))
    if isinstance(event, JobAborted):
        return _error_event(event.error, job.request_id)
    return _sse(CompletedEvent(**base, usage=usage_of(job, event.usage, openai)))


async def stream(job: Job, openai: bool = False) -> AsyncIterator[ServerSentEvent]:
    """Streaming: one event per image as soon as it is delivered, then completed and [DONE]."""
    try:
        async with contextlib.aclosing(job.events()) as events:
            async for event in events:
                yield _stream_event(job, event, openai)
                if isinstance(event, JobAborted):
                    return
        yield ServerSentEvent(data="[DONE]", sep="\n")
    except SeedreamError as exc:
        yield _error_event(exc, job.request_id)
    except Exception:
        log.exception("stream failed request_id=%s", job.request_id)
        yield _error_event(EngineError("Image generation failed."), job.request_id)


async def unless_disconnected(receive: Receive, work: Awaitable[_T]) -> _T:
    """Await ``work``, cancelling it when the client disconnects."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(watcher, task, return_exceptions=True)
    if task.cancelled():
        raise ClientDisconnected("The client disconnected before the response was ready.")
    return task.result()


class JobResponse(Response):
    """The response of an admitted job: the job lives, and settles, inside this response. ``openai_usage``
    (set by the OpenAI routes) adds OpenAI's fields to ``usage``; the Ark route keeps Ark's shape exactly."""

    def __init__(self, job: Job, openai_usage: bool = False) -> None:
        super().__init__()
        self.job = job
        self.openai_usage = openai_usage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Streams are sent while the job lives; a JSON body (or error) is sent once the job has settled, so
        its slot is free and its ledger row closed before the client sees the answer."""
        response = await self._run(scope, receive, send)
        if response is not None:
            await response(scope, receive, send)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> Response | None:
        """The job's life; returns the response still to send (None when it was streamed or nobody waits)."""
        job = self.job
        async with job:
            # 6. the engine slot and the decoded references first: their errors are still plain JSON
            try:
                await unless_disconnected(receive, job.start())
            except ClientDisconnected:
                return None
            except SeedreamError as exc:
                job.status = exc.code
                return error_response(exc, job.request_id)
            # 7. the images, streamed or collected
            if job.request.stream:
                events = EventSourceResponse(stream(job, self.openai_usage), sep="\n", ping=PING_S)
                await events(scope, receive, send)
                return None
            try:
                body = await unless_disconnected(receive, collect(job, self.openai_usage))
            except ClientDisconnected:
                return None
            except SeedreamError as exc:
                return error_response(exc, job.request_id)
            return JSONResponse(body.model_dump(exclude_none=True, serialize_as_any=True))
