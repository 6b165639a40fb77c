"""Steps 5 and 6 of a request: finish an engine's image (resize, watermark, provenance, encode) off the
event loop, then store it durably behind a signed link or inline it as base64.

Layer decomposition items (``ImageResult.layer`` set) are finished apart: always PNG with their alpha
kept (whatever ``output_format`` says), resized (cover-crop, as ordinary images) only when the engine drew
them at another size, their box moved with the pixels; provenance labels on every item; the visible mark
on the base image (z_index 0) only, never on the transparent layers: a mark on each layer would stack N
marks in the composite and make a corner of every layer opaque."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from dataclasses import dataclass

from PIL import Image

from . import postprocess
from .engines.base import ImageResult, Layer
from .events import ImageDelivered
from .metrics import Metrics
from .storage import Storage

#: every layer-decomposition item is a PNG (transparency), whatever the request's output_format
LAYER_FORMAT = "png"


@dataclass(frozen=True)
class Delivery:
    """How one job's images are delivered: the same for every image of the job."""

    name_prefix: str  # the request id: images are named <request id>_<index>.<format>
    model: str
    engine: str
    created: int
    width: int
    height: int
    draw_watermark: bool  # draw the visible mark here
    watermarked: bool  # the delivered image carries the visible mark (drawn here or by an upstream)
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
        if spec.draw_watermark:
            image = postprocess.add_watermark(image, self.watermark_text)
        provenance = postprocess.Provenance(
            model=spec.model, content_id=name, created=spec.created, watermarked=spec.watermarked, engine=spec.engine
        )
        data = postprocess.encode_image(
            image, provenance=provenance, output_format=spec.output_format, quality=self.jpeg_quality
        )
        self.metrics.stage_seconds.labels("encode").observe(time.perf_counter() - started)
        return data, image.width, image.height

    def _finish_layer(self, spec: Delivery, image: Image.Image, layer: Layer, name: str) -> tuple[bytes, Layer]:
        """Step 5 for a layer-decomposition item (in a worker thread): RGBA kept, PNG, mark on the base only."""
        started = time.perf_counter()
        box = postprocess.resize_box(layer.box, image.size, spec.width, spec.height)
        image = postprocess.resize_to(image, spec.width, spec.height, keep_alpha=True)
        on_base = layer.z_index == 0
        if spec.draw_watermark and on_base:
            image = postprocess.add_watermark(image, self.watermark_text)
        provenance = postprocess.Provenance(
            model=spec.model,
            content_id=name,
            created=spec.created,
            watermarked=spec.watermarked and on_base,
            engine=spec.engine,
        )
        data = postprocess.encode_image(image, provenance=provenance, output_format=LAYER_FORMAT)
        self.metrics.stage_seconds.labels("encode").observe(time.perf_counter() - started)
        return data, dataclasses.replace(layer, box=box)

    def pass_through(self, result: ImageResult) -> ImageDelivered:
        """An upstream's image as it gave it (a relay with re-hosting off): its link or base64, its size."""
        width, height = result.size or (0, 0)
        fmt = LAYER_FORMAT if result.layer is not None else None
        return ImageDelivered(
            result.index, width, height, url=result.url, b64_json=result.b64_json, layer=result.layer, output_format=fmt
        )

    async def deliver(
        self, spec: Delivery, index: int, image: Image.Image, layer: Layer | None = None
    ) -> ImageDelivered:
        """Steps 5-6: finish off the event loop, then store durably (or inline as base64). A ``layer`` item
        is a PNG with its alpha (see the module docstring)."""
        name = f"{spec.name_prefix}_{index}"
        fmt: str | None = None
        if layer is None:
            data, width, height = await asyncio.to_thread(self._finish, spec, image, name)
        else:
            data, layer = await asyncio.to_thread(self._finish_layer, spec, image, layer, name)
            width, height, fmt = spec.width, spec.height, LAYER_FORMAT
        if spec.b64_json:
            b64 = base64.b64encode(data).decode("ascii")
            return ImageDelivered(index, width, height, b64_json=b64, layer=layer, output_format=fmt)
        started = time.perf_counter()
        stored = await self.storage.put(f"{name}.{fmt or spec.output_format}", data)
        self.metrics.stage_seconds.labels("store").observe(time.perf_counter() - started)
        return ImageDelivered(index, width, height, url=stored.url, layer=layer, output_format=fmt)
