"""One generation request from admission to settlement: the :class:`Job`.

A job owns everything a request holds while it lives, and gives all of it back in one place
(:meth:`Job.settle`), however it ends — completed, aborted, refused half-way, cancelled because its
client left or did not read::

    admit ──> prepared ──start──> running ──events──> settled
    (queue place,   (references     (engine slot,     (images, one     (place, slot, pixels and
     ledger row      fetched,        references        event each)      reservation given back;
     "running")      group planned,  decoded and                        ledger row closed)
                     images and      checked)
                     pixels reserved)

The ledger row is opened at admission and updated after every delivered image, so a crash leaves it
``running`` with the images delivered so far, and the next start marks it ``interrupted``.
Use it as ``async with job:`` once :meth:`ImageService.admit` and :meth:`ImageService.prepare` returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from PIL import Image

from .accounts import NO_KEY, ApiKey, Reservation, UsageRecord
from .delivery import Delivery
from .engines.base import EncodedImage, ImageJob, ImageResult, ImageTask, ReferenceMode
from .errors import ClientDisconnected, EngineError, SeedreamError, SensitiveContentDetected
from .events import Event, ImageFailed, JobAborted, JobCompleted, JobUsage
from .models import ServedModel
from .protocol import GenerationRequest
from .references import FetchedReference
from .sizes import image_tokens

if TYPE_CHECKING:
    from .service import ImageService

log = logging.getLogger("seedream_server.job")

RUNNING, OK, CANCELLED = "running", "ok", "cancelled"  # ledger statuses besides error codes


@dataclass(frozen=True)
class Plan:
    """The delivered size and one task (own prompt and seed) per image."""

    width: int
    height: int
    tasks: tuple[ImageTask, ...]


class Job:
    """One admitted request; see the module docstring for its life."""

    def __init__(
        self,
        service: ImageService,
        request: GenerationRequest,
        request_id: str,
        served: ServedModel,
        key: ApiKey | None,
        parsed_size: tuple[int, int] | str,
    ) -> None:
        self.service = service
        self.request = request
        self.request_id = request_id
        self.served = served
        self.key = key
        self.parsed_size = parsed_size  # the size as validated at admission (a preset or WxH)
        self.created = int(time.time())
        self.started = time.perf_counter()
        self.status = RUNNING
        self.usage = JobUsage()
        self.plan = Plan(0, 0, ())
        self.references: list[FetchedReference] = []  # fetched, still compressed
        self.forwarded: tuple[str, ...] = ()  # references relayed as sent (ReferenceMode.FORWARDED)
        self.upstream_request_id: str | None = None  # an upstream engine's id for this request
        self.web_searches = 0  # searches the web-search plug point made for this request
        self._image_job: ImageJob | None = None
        self._first_failure = ""  # the status when every image of the job failed
        # what the job holds, given back by settle()
        self._admitted = False
        self._pixels = 0
        self._reservation: Reservation | None = None
        self._slot_since: float | None = None
        self._settled = False

    # -- admission and preparation (ImageService.admit and .prepare drive these) ---------------------------------

    async def admit(self) -> None:
        """Take a queue place (429 when full) and open the ledger row, status ``running``."""
        self.served.queue.admit()
        self._admitted = True
        self.service.job_started()
        key_name = self.key.name if self.key is not None else NO_KEY
        await self.service.accounts.open_entry(
            UsageRecord(key_name, self.served.name, 0, 0, RUNNING, 0, self.request_id)
        )

    def hold_references(self, references: list[FetchedReference], pixels: int) -> None:
        """Keep the fetched (still compressed) references and their share of the decoded-pixel budget."""
        self._pixels = self.service.pixel_budget.reserve(pixels)
        self.references = references

    async def reserve_images(self) -> None:
        """Reserve the planned images against the key's images-per-minute window (429 when over)."""
        if self.key is not None:
            self._reservation = await self.service.accounts.reserve(self.key, len(self.plan.tasks), self.request_id)

    # -- running --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Wait for an engine slot, then decode the references (within the time budget) and check them."""
        queue, metrics = self.served.queue, self.service.metrics
        gauge = metrics.queue_depth.labels(self.served.name)
        gauge.inc()
        try:
            await queue.slots.acquire()
        finally:
            gauge.dec()
        self._slot_since = time.perf_counter()
        metrics.inflight.inc()
        caps = self.served.engine.capabilities
        decoded: tuple[Image.Image, ...] = ()
        if self.references and caps.references is ReferenceMode.DECODED:
            images = await self.service.decoder.decode(self.references, caps.reference_pixels)
            await self.service.moderation.check_references(images, self.request.prompt)
            decoded = tuple(images)
        encoded: tuple[EncodedImage, ...] = ()
        if caps.references is ReferenceMode.ENCODED:
            encoded = tuple(EncodedImage(ref.data, ref.format, ref.width, ref.height) for ref in self.references)
        request = self.request
        self._image_job = ImageJob(
            model=self.served.name,
            tasks=self.plan.tasks,
            width=self.plan.width,
            height=self.plan.height,
            references=decoded,
            guidance_scale=request.guidance_scale,
            fast=request.fast,
            group=request.sequential and len(self.plan.tasks) > 1,
            request_id=self.request_id,
            base_prompt=request.prompt,
            encoded_references=encoded,
            forwarded=self.forwarded,
            fields=request.fields,
            watermark=request.watermark,
            response_format=request.response_format,
            layer_decomposition=request.layer_decomposition,
        )

    async def events(self) -> AsyncGenerator[Event, None]:
        """Steps 4-7 after :meth:`start`: one event per image as soon as it is delivered, then a final event."""
        async with self._results() as results:
            async for result in results:
                event = await self._settle_result(result)
                yield event
                if isinstance(event, JobAborted):
                    return
        if self.usage.generated_images == 0 and self._first_failure:
            self.status = self._first_failure
        elif self.status == RUNNING:
            self.status = OK
        yield JobCompleted(self.usage)

    async def _settle_result(self, result: ImageResult | BaseException) -> Event:
        """One engine result becomes an event: delivered, failed (the group goes on) or aborted."""
        if isinstance(result, BaseException):
            return self._aborted(result, "engine")
        self.upstream_request_id = result.upstream_request_id or self.upstream_request_id
        if result.error is not None or (result.image is None and not result.passthrough):
            return self._image_failed(result.index, result.error or EngineError("The engine returned no image."))
        try:
            if result.image is None:  # a relay that does not re-host: the upstream's link or bytes as they are
                event = self.service.deliverer.pass_through(result)
            else:
                await self.service.moderation.check_output(result.image, self._prompt_of(result.index))
                spec = self._delivery(drawn=result.watermarked, size=result.image.size)
                event = await self.service.deliverer.deliver(spec, result.index, result.image, result.layer)
        except SensitiveContentDetected as refused:
            return self._image_failed(result.index, refused)
        except Exception as exc:  # an image check, encoder or storage failed: stop the group
            return self._aborted(exc, "delivery")
        self.usage = JobUsage(
            self.usage.generated_images + 1, self.usage.output_tokens + image_tokens(event.width, event.height)
        )
        self.service.metrics.images.labels(self.served.name, "succeeded").inc()
        await self.service.accounts.update_entry(self.request_id, self.usage.generated_images, self.usage.output_tokens)
        return event

    def _prompt_of(self, index: int) -> str:
        tasks = self.plan.tasks
        return tasks[index].prompt if 0 <= index < len(tasks) else self.request.prompt

    def _image_failed(self, index: int, error: SeedreamError) -> ImageFailed:
        self._first_failure = self._first_failure or error.code
        self.service.metrics.images.labels(self.served.name, "failed").inc()
        return ImageFailed(index, error)

    def _aborted(self, exc: BaseException, stage: str) -> JobAborted:
        if not isinstance(exc, SeedreamError):
            log.error("%s failure request_id=%s", stage, self.request_id, exc_info=exc)
        error = exc if isinstance(exc, SeedreamError) else EngineError(f"Image generation failed ({stage}).")
        self.status = error.code
        return JobAborted(error, self.usage)

    def _delivery(self, drawn: bool, size: tuple[int, int]) -> Delivery:
        """How an image of this job is delivered; ``drawn``: the engine already drew the visible mark; ``size``:
        the engine's image, kept as it is when the engine (an upstream) decides the size itself."""
        request = self.request
        width, height = size if self.served.engine.capabilities.plans_groups else (self.plan.width, self.plan.height)
        return Delivery(
            name_prefix=self.request_id,
            model=self.served.name,
            engine=self.served.engine.kind,
            created=self.created,
            width=width,
            height=height,
            draw_watermark=request.watermark and not drawn,
            watermarked=request.watermark,
            output_format=request.output_format,
            b64_json=request.response_format == "b64_json",
        )

    @contextlib.asynccontextmanager
    async def _results(self) -> AsyncIterator[AsyncIterator[ImageResult | BaseException]]:
        """The engine's results through a one-item buffer: the engine runs at most one image ahead of
        delivery, and stops (its task cancelled) when the consumer goes away."""
        assert self._image_job is not None, "start() first"
        buffer: asyncio.Queue[ImageResult | BaseException | None] = asyncio.Queue(maxsize=1)
        producer = asyncio.create_task(self._produce(self._image_job, buffer))

        async def drain() -> AsyncIterator[ImageResult | BaseException]:
            while (item := await buffer.get()) is not None:
                yield item

        try:
            yield drain()
        finally:
            producer.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(producer, return_exceptions=True)

    async def _produce(self, job: ImageJob, buffer: asyncio.Queue[ImageResult | BaseException | None]) -> None:
        """Step 4: run the engine, handing results over one at a time (an exception as the last one)."""
        stage = self.service.metrics.stage_seconds.labels("generate")
        try:
            async with contextlib.aclosing(self.served.engine.generate(job)) as results:  # type: ignore[type-var]
                last = time.perf_counter()
                async for result in results:
                    stage.observe(time.perf_counter() - last)
                    await buffer.put(result)
                    last = time.perf_counter()
            await buffer.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which reports it
            await buffer.put(exc)

    # -- settlement: the one place a job gives back what it holds and closes its ledger row -------------

    async def __aenter__(self) -> Job:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.settle(exc)

    async def settle(self, exc: BaseException | None = None) -> None:
        """Give back the queue place, slot, decoded pixels and unused images; close the ledger row. Once."""
        if self._settled:
            return
        self._settled = True
        if self.status == RUNNING:
            self.status = _status_of(exc)
        with anyio.CancelScope(shield=True):  # a cancelled caller must still account
            slot_seconds = None
            if self._slot_since is not None:
                slot_seconds = time.perf_counter() - self._slot_since
                self.served.queue.slots.release()
                self.service.metrics.inflight.dec()
            if self._admitted:
                self.served.queue.leave(slot_seconds)
            self.service.pixel_budget.release(self._pixels)
            self.references = []
            delivered, tokens = self.usage.generated_images, self.usage.output_tokens
            if self._reservation is not None:
                await self._reservation.settle(delivered)
            elapsed = time.perf_counter() - self.started
            self._report(elapsed)
            if self._admitted:
                await self.service.accounts.close_entry(
                    self.request_id,
                    images=delivered,
                    tokens=tokens,
                    status=self.status,
                    duration_ms=round(elapsed * 1000),
                    upstream_request_id=self.upstream_request_id,
                )
                self.service.job_ended()

    def _report(self, elapsed: float) -> None:
        metrics, name = self.service.metrics, self.served.name
        metrics.requests.labels(name, self.status).inc()
        metrics.request_seconds.labels(name).observe(elapsed)
        log.info(
            "request_id=%s model=%s images=%d/%d status=%s duration_ms=%.0f user=%r upstream_request_id=%s",
            self.request_id,
            name,
            self.usage.generated_images,
            len(self.plan.tasks),
            self.status,
            elapsed * 1000,
            self.request.user or "-",
            self.upstream_request_id or "-",
        )


def _status_of(exc: BaseException | None) -> str:
    """The ledger status of a job that ended without finishing its events."""
    gone = (asyncio.CancelledError, GeneratorExit, ClientDisconnected)  # the client left, or was cut off
    if isinstance(exc, BaseExceptionGroup):  # from a response's task group (sse-starlette)
        _, rest = exc.split(gone)
        if rest is None:
            return CANCELLED
        exc = rest.exceptions[0]
    if exc is None or isinstance(exc, gone):
        return CANCELLED
    if isinstance(exc, SeedreamError):
        return exc.code
    return SeedreamError.code
