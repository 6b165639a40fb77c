"""The ark engine: relays requests to Volcengine Ark (or anything that speaks its images API).

Every field the client sent goes upstream as it was sent (unknown ones included), with the upstream
model's name and the references as the request gave them. Groups and streams are Ark's own: for a group
or a streamed request the engine asks upstream for server-sent events and yields each image as it
arrives, so a per-image failure upstream stays a per-image failure here, with its upstream code.

With ``rehost`` (the default) the engine asks upstream for ``b64_json`` and hands decoded images to the
service, which stores them under our signed links with our provenance metadata; Ark draws its own
watermark when the request's ``watermark`` is true, so those results say it is already drawn. Without
``rehost``, upstream links (or base64) pass through as they are.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ...sse import SSEDecoder, SSEEvent
from ..base import EngineCapabilities, ImageJob, ImageResult, ReferenceMode
from .errors import clean, error_from_code, malformed, request_id_of, transport_error
from .options import UpstreamOptions
from .rehost import image_result
from .relay import RelayEngine

GENERATIONS = "images/generations"
PARTIAL_SUCCEEDED = "image_generation.partial_succeeded"
PARTIAL_FAILED = "image_generation.partial_failed"
COMPLETED = "image_generation.completed"


class ArkEngine(RelayEngine):
    """One model relayed to Ark."""

    kind = "ark"

    def __init__(self, name: str, options: UpstreamOptions) -> None:
        super().__init__(
            name,
            options,
            (options.base_url,),
            EngineCapabilities(
                max_references=14,
                references=ReferenceMode.FORWARDED,
                plans_groups=True,
                layer_decomposition=True,  # forwarded: Ark decomposes
                description=f"relayed to Ark as {options.upstream_model}",
            ),
        )

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any]) -> ArkEngine:
        return cls(name, UpstreamOptions.parse("ark", name, options))

    def payload(self, job: ImageJob) -> tuple[dict[str, Any], bool]:
        """The upstream request body, and whether it asks for a stream."""
        body = {key: value for key, value in job.fields.items() if key != "image"}
        body["model"] = self.options.upstream_model
        if job.forwarded:
            single = isinstance(job.fields.get("image"), str) and len(job.forwarded) == 1
            body["image"] = job.forwarded[0] if single else list(job.forwarded)
        body["response_format"] = "b64_json" if self.options.rehost else job.response_format
        streamed = bool(job.fields.get("stream")) or job.fields.get("sequential_image_generation") == "auto"
        if streamed:
            body["stream"] = True
        return body, streamed

    async def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        body, streamed = self.payload(job)
        results = self._streamed(job, body) if streamed else self._answered(job, body)
        async for result in results:
            yield result

    async def _answered(self, job: ImageJob, body: dict[str, Any]) -> AsyncIterator[ImageResult]:
        """One JSON answer holding every image (or per-image errors) of the request."""
        async with self.upstream.call(GENERATIONS, json=body) as response:
            try:
                answer = json.loads(response.content)
            except ValueError:
                raise malformed("an answer that is not JSON") from None
            request_id = request_id_of(response, answer)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise malformed("an answer without a data list")
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                raise malformed("a data item that is not an object")
            yield await self._result(job, index, item, request_id)

    async def _streamed(self, job: ImageJob, body: dict[str, Any]) -> AsyncIterator[ImageResult]:
        """Server-sent events: one result per image as upstream finishes it."""
        async with self.upstream.call(GENERATIONS, json=body, stream=True) as response:
            request_id = request_id_of(response)
            decoder = SSEDecoder()
            try:
                async for text in response.aiter_text():
                    for event in decoder.feed(text):
                        item = _event_data(event, self.upstream.secrets())
                        if item is _END:
                            return
                        if item is not None:
                            yield await self._result(job, _index(item), item, request_id)
            except httpx.HTTPError as exc:
                raise transport_error(exc, self.options.timeout_s).error from None
        raise malformed("an event stream that ended before it completed")

    async def _result(self, job: ImageJob, index: int, item: dict[str, Any], request_id: str | None) -> ImageResult:
        error = item.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), str(error.get("message") or "The upstream failed to make this image.")
            failure = error_from_code(code if isinstance(code, str) else None, self._clean(message))
            return ImageResult(index, error=failure, upstream_request_id=request_id)
        return await image_result(
            index,
            item,
            client=self.upstream.client,
            rehost=self.options.rehost,
            timeout_s=self.options.timeout_s,
            watermarked=job.watermark,
            request_id=request_id,
            fallback_size=(job.width, job.height),
        )

    def _clean(self, message: str) -> str:
        return clean(message, self.upstream.secrets())


_END: dict[str, Any] = {}  # the stream completed


def _event_data(event: SSEEvent, secrets: tuple[str, ...]) -> dict[str, Any] | None:
    """The data of an image event (succeeded or failed), :data:`_END` at the end of the stream, None for an
    event of another type (skipped); raises the upstream's error on an ``error`` event."""
    if event.data.strip() == "[DONE]":
        return _END
    try:
        data = json.loads(event.data)
    except ValueError:
        raise malformed("an event that is not JSON") from None
    if not isinstance(data, dict):
        raise malformed("an event that is not an object")
    kind = data.get("type") or event.event
    if kind == COMPLETED:
        return _END
    if kind == "error":
        found = data.get("error")
        error: dict[str, Any] = found if isinstance(found, dict) else {}
        code, message, param = error.get("code"), error.get("message"), error.get("param")
        raise error_from_code(
            code if isinstance(code, str) else None,
            clean(str(message or "The upstream stopped the group."), secrets),
            param if isinstance(param, str) else None,
        )
    return data if kind in (PARTIAL_SUCCEEDED, PARTIAL_FAILED) else None


def _index(item: dict[str, Any]) -> int:
    index = item.get("image_index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise malformed("an image event without a valid image_index")
    return index
