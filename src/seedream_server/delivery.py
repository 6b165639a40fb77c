"""Steps 5 and 6 of a request: finish an engine's image (resize, watermark, provenance, encode) off the
event loop, then store it durably behind a signed link or inline it as base64."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass

from PIL import Image

from . import postprocess
from .engines.base import ImageResult
from .events import ImageDelivered
from .metrics import Metrics
from .storage import Storage


@dataclass(frozen=True)
class Delivery:
    """How one job's images are delivered: the same for every image of the job."""

    name_prefix: str  # the request id: images are named <request id>_<index>.<format>
    model: str
    engine: str
    created: int
    width: int
    height: int
    watermark: bool
    output_format: str
    b64_json: bool


class Deliverer:
    """Finishes and stores images; one per app."""

    def __init__(self, storage: Storage, metrics: Metrics, watermark_text: str, jpeg_quality: int) -> None:
        self.storage = storage
        self.metrics = metrics
        self.watermark_text = watermark_text
        self.jpeg_quality = jpeg_quality

    def _finish(self, spec: Delivery, image: Image.Image, name: str) -> tuple[bytes, int, int]:
        """Step 5 (in a worker thread): resize, watermark, provenance, encode."""
        started = time.perf_counter()
        image = postprocess.resize_to(image, spec.width, spec.height)
        if spec.watermark:
            image = postprocess.add_watermark(image, self.watermark_text)
        provenance = postprocess.Provenance(
            model=spec.model, content_id=name, created=spec.created, watermarked=spec.watermark, engine=spec.engine
        )
        data = postprocess.encode_image(
            image, provenance=provenance, output_format=spec.output_format, quality=self.jpeg_quality
        )
        self.metrics.stage_seconds.labels("encode").observe(time.perf_counter() - started)
        return data, image.width, image.height

    def pass_through(self, result: ImageResult) -> ImageDelivered:
        """An upstream's image as it gave it (a relay with re-hosting off): its link or base64, its size."""
        width, height = result.size or (0, 0)
        return ImageDelivered(result.index, width, height, url=result.url, b64_json=result.b64_json)

    async def deliver(self, spec: Delivery, index: int, image: Image.Image) -> ImageDelivered:
        """Steps 5-6: finish off the event loop, then store durably (or inline as base64)."""
        name = f"{spec.name_prefix}_{index}"
        data, width, height = await asyncio.to_thread(self._finish, spec, image, name)
        if spec.b64_json:
            return ImageDelivered(index, width, height, b64_json=base64.b64encode(data).decode("ascii"))
        started = time.perf_counter()
        stored = await self.storage.put(f"{name}.{spec.output_format}", data)
        self.metrics.stage_seconds.labels("store").observe(time.perf_counter() - started)
        return ImageDelivered(index, width, height, url=stored.url)
