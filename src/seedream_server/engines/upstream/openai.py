"""The openai engine: relays to OpenAI-compatible images servers (OpenAI, vLLM-Omni, SGLang Diffusion,
LocalAI, another seedream-server), one upstream call per image.

Our planner plans a group; each image is one call with its own prompt and seed, ``n`` = 1, at the size the
service resolved, asking for ``b64_json`` when re-hosting (else for the client's ``response_format``, passed
through). Text-only images go to ``{base_url}/images/generations`` (JSON),
images with references to ``{base_url}/images/edits`` (multipart, ``image[]``); in a group, earlier outputs
are fed forward as references as far as ``max_references`` allows. Several ``base_urls`` are replicas
(see :mod:`.replicas`).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

from PIL import Image

from ...errors import SensitiveContentDetected
from ..base import EncodedImage, EngineCapabilities, ImageJob, ImageResult, ImageTask, ReferenceMode
from .errors import malformed, request_id_of
from .options import UpstreamOptions
from .rehost import b64_bytes, fetch_image, image_result
from .relay import RelayEngine

GENERATIONS = "images/generations"
EDITS = "images/edits"


class OpenAIEngine(RelayEngine):
    """One model relayed to OpenAI-compatible replicas."""

    kind = "openai"

    def __init__(self, name: str, options: UpstreamOptions) -> None:
        super().__init__(
            name,
            options,
            options.base_urls,
            EngineCapabilities(
                max_references=options.max_references,
                references=ReferenceMode.ENCODED,
                plans_groups=False,
                description=f"relayed to OpenAI-compatible servers as {options.upstream_model}",
            ),
        )

    @classmethod
    def from_options(cls, name: str, options: dict[str, Any]) -> OpenAIEngine:
        return cls(name, UpstreamOptions.parse("openai", name, options))

    async def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        room = self.options.max_references - len(job.encoded_references)  # for earlier outputs of a group
        fed: list[EncodedImage] = []
        for task in job.tasks:
            references = list(job.encoded_references) + (fed[-room:] if room > 0 else [])
            try:
                result, data = await self._one(job, task, references)
            except SensitiveContentDetected as refused:  # this image refused upstream: the group goes on
                yield ImageResult(task.index, error=refused)
                continue
            yield result
            if job.group and room > 0 and data and task is not job.tasks[-1]:
                fed.append(await asyncio.to_thread(_encoded, data))

    def fields(self, job: ImageJob, task: ImageTask) -> dict[str, Any]:
        """The upstream request's fields for one image."""
        fields: dict[str, Any] = {
            "model": self.options.upstream_model,
            "prompt": task.prompt,
            "n": 1,
            "size": f"{job.width}x{job.height}",
            "response_format": "b64_json" if self.options.rehost else job.response_format,
        }
        if self.options.extensions:  # re-hosted images get our mark; passed-through ones the upstream's
            fields.update(seed=task.seed, watermark=job.watermark and not self.options.rehost)
        return fields

    async def _one(self, job: ImageJob, task: ImageTask, references: list[EncodedImage]) -> tuple[ImageResult, bytes]:
        """One upstream call for one image: the result and the image's bytes (to feed forward)."""
        fields = self.fields(job, task)
        if references:
            form = {
                key: (str(value).lower() if isinstance(value, bool) else str(value)) for key, value in fields.items()
            }
            files = [
                ("image[]", (f"image-{i}.{ref.format}", ref.data, f"image/{ref.format}"))
                for i, ref in enumerate(references)
            ]
            call = self.upstream.call(EDITS, data=form, files=files)
        else:
            call = self.upstream.call(GENERATIONS, json=fields)
        async with call as response:
            try:
                answer = json.loads(response.content)
            except ValueError:
                raise malformed("an answer that is not JSON") from None
            request_id = request_id_of(response, answer)
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or not data or not isinstance(data[0], dict):
            raise malformed("an answer without an image")
        item = data[0]
        result = await image_result(
            task.index,
            item,
            client=self.upstream.client,
            rehost=self.options.rehost,
            timeout_s=self.options.timeout_s,
            request_id=request_id,
            fallback_size=(job.width, job.height),
        )
        return result, await self._bytes_of(job, item)

    async def _bytes_of(self, job: ImageJob, item: dict[str, Any]) -> bytes:
        """The image's bytes when a group feeds it forward (fetched when upstream gave a link), else nothing."""
        if not job.group:
            return b""
        b64, url = item.get("b64_json"), item.get("url")
        if isinstance(b64, str):
            return b64_bytes(b64)
        return await fetch_image(self.upstream.client, str(url), self.options.timeout_s)


def _encoded(data: bytes) -> EncodedImage:
    """An earlier output as a reference for the next call (its bytes as upstream sent them)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = (image.format or "png").lower()
            return EncodedImage(data, fmt, image.width, image.height)
    except (OSError, ValueError):
        raise malformed("an image that cannot be decoded") from None
