"""The one orchestration of a generation request: validate, references, plan, generate, finish,
deliver, account. It yields one event per image, in order, as soon as that image is stored; the HTTP
layer renders the events as a JSON body or as server-sent events.

Validation, references and planning happen in :meth:`ImageService.prepare`, before any response is
started, so their errors are plain 400 JSON even for streaming requests. :meth:`ImageService.run`
drives the engine; closing its iterator (client gone) cancels the rest of the job.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import anyio
from PIL import Image

from . import postprocess
from .accounts import NO_KEY, Accounts, ApiKey, Reservation, UsageRecord
from .config import Settings
from .engines.base import Engine, ImageJob, ImageResult, ImageTask
from .errors import (
    AccessDenied,
    EngineError,
    InvalidParameter,
    NotFoundError,
    SeedreamError,
    SensitiveContentDetected,
    ServerOverloaded,
)
from .metrics import Metrics
from .moderation import Moderation
from .planner import Planner
from .protocol import MAX_IMAGES_PER_REQUEST, GenerationRequest
from .references import ReferencePolicy, load_references
from .sizes import SizeLimits, image_tokens, resolve_size
from .storage import Storage

log = logging.getLogger("seedream_server.service")

MAX_SEED = 2_147_483_647


@dataclass
class ServedModel:
    """A configured model: its engine and the slots that bound concurrent jobs on it."""

    name: str
    engine: Engine
    aliases: tuple[str, ...] = ()
    max_concurrency: int = 2
    max_queue: int = 16
    slots: asyncio.Semaphore = field(init=False)
    admitted: int = field(init=False, default=0)  # jobs running or waiting for a slot
    mean_seconds: float = field(init=False, default=1.0)  # moving average of slot holding times

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_concurrency)

    def check_capacity(self) -> None:
        """429 now when the queue is full, before a request spends work (references, planning) on itself."""
        if self.admitted >= self.max_concurrency + self.max_queue:
            waiting = self.admitted - self.max_concurrency
            retry = math.ceil(self.mean_seconds * (waiting + 1) / max(1, self.max_concurrency))
            raise ServerOverloaded(
                f"The model {self.name} is at capacity ({self.max_concurrency} running, {waiting} waiting); "
                "retry later.",
                retry_after=min(60, max(1, retry)),
            )

    def admit(self) -> None:
        """Take a place among the running and waiting jobs, or 429 when ``max_queue`` already wait."""
        self.check_capacity()
        self.admitted += 1

    def leave(self, seconds: float | None = None) -> None:
        self.admitted = max(0, self.admitted - 1)
        if seconds is not None:
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds


@dataclass
class JobTicket:
    """What a prepared job holds until it ends: its queue place, its images-per-minute reservation."""

    key_name: str = NO_KEY
    started: float = field(default_factory=time.perf_counter)  # when prepare began: the ledger's duration
    reservation: Reservation | None = None
    admitted: bool = False
    running_since: float | None = None  # when the job got its engine slot
    settled: bool = False


@dataclass(frozen=True)
class PreparedJob:
    """A request that passed every check, with references loaded and the group planned."""

    request: GenerationRequest
    request_id: str
    served: ServedModel
    job: ImageJob
    created: int
    ticket: JobTicket | None = None


@dataclass(frozen=True)
class ImageDelivered:
    index: int
    width: int
    height: int
    url: str | None = None
    b64_json: str | None = None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class ImageFailed:
    index: int
    error: SeedreamError


@dataclass(frozen=True)
class Usage:
    generated_images: int
    output_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "generated_images": self.generated_images,
            "output_tokens": self.output_tokens,
            "total_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class JobCompleted:
    usage: Usage


@dataclass(frozen=True)
class JobAborted:
    """An internal failure stopped the job; images already delivered stay delivered."""

    error: SeedreamError
    usage: Usage


Event = ImageDelivered | ImageFailed | JobCompleted | JobAborted


class ImageService:
    """Owns the request pipeline; one instance per app."""

    def __init__(
        self,
        settings: Settings,
        models: dict[str, ServedModel],
        storage: Storage,
        planner: Planner,
        metrics: Metrics,
        reference_policy: ReferencePolicy,
        moderation: Moderation | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        self._running = 0  # jobs inside run()
        self._idle = asyncio.Event()
        self._idle.set()
        self.moderation = moderation or Moderation()
        self.accounts = accounts
        self.settings = settings
        self.storage = storage
        self.planner = planner
        self.metrics = metrics
        self.reference_policy = reference_policy
        self.models = models
        self._lookup: dict[str, ServedModel] = {}
        for served in models.values():
            for name in (served.name, *served.aliases):
                self._lookup[name] = served

    async def wait_idle(self) -> None:
        """Wait until no job is running (for shutdown, so every job settles its ledger row first)."""
        await self._idle.wait()

    def resolve_model(self, name: str) -> ServedModel:
        served = self._lookup.get(name)
        if served is None:
            raise NotFoundError(
                f"The model or endpoint {name} does not exist or you do not have access to it.",
                param="model",
            )
        return served

    async def prepare(self, request: GenerationRequest, request_id: str, key: ApiKey | None = None) -> PreparedJob:
        """Steps 1-3: everything that can fail with a 400 before any image is made.

        With a ``key``, also its model list (403) and images-per-minute limit (429); every job takes a
        place in the model's bounded queue (429 ``ServerOverloaded`` when full), released when it ends.
        """
        # 1. validate what depends on settings and on the model
        prepare_started = time.perf_counter()
        served = self.resolve_model(request.model)
        if key is not None:
            self.check_access(key, served)
            if self.accounts is not None:  # a spent key is refused before any work (the real reservation follows)
                self.accounts.reserve(key, 1).settle(0)
        served.admit()  # a queue place from the start: references and planning count against capacity
        try:
            return await self._prepare_admitted(request, request_id, key, served, prepare_started)
        except BaseException:
            served.leave()
            raise

    async def _prepare_admitted(
        self,
        request: GenerationRequest,
        request_id: str,
        key: ApiKey | None,
        served: ServedModel,
        prepare_started: float,
    ) -> PreparedJob:
        caps = served.engine.capabilities
        if len(request.prompt) > self.settings.max_prompt_chars:
            raise InvalidParameter(
                f"The parameter `prompt` is too long: {len(request.prompt)} characters; "
                f"the limit is {self.settings.max_prompt_chars}.",
                param="prompt",
            )
        if len(request.images) > caps.max_references:
            raise InvalidParameter(
                f"The parameter `image` has {len(request.images)} images; model {served.name} "
                f"takes at most {caps.max_references} reference images.",
                param="image",
            )
        if not request.sequential and len(request.images) + request.n > MAX_IMAGES_PER_REQUEST:
            raise InvalidParameter(
                f"The parameter `n` is too large: {len(request.images)} reference images + {request.n} "
                f"outputs exceed {MAX_IMAGES_PER_REQUEST}.",
                param="n",
            )
        self.moderation.check_prompt(request.prompt)
        limits = SizeLimits(caps.min_pixels, caps.max_pixels, caps.min_ratio, caps.max_ratio)
        resolve_size(request.size, request.prompt, limits)  # reject a bad size before fetching anything

        # 2. references: fetched concurrently, checked before decoding
        started = time.perf_counter()
        references = await load_references(list(request.images) or None, self.reference_policy)
        if references:
            await self.moderation.check_references((ref.image for ref in references), request.prompt)
            self.metrics.stage_seconds.labels("fetch").observe(time.perf_counter() - started)

        # 3. plan: delivered size, image count, per-image prompts and seeds
        started = time.perf_counter()
        first = (references[0].width, references[0].height) if references else None
        width, height = resolve_size(request.size, request.prompt, limits, first)
        if request.sequential and caps.supports_groups:
            cap = min(request.max_images, MAX_IMAGES_PER_REQUEST - len(references))
            plan = await self.planner.plan(request.prompt, cap)
            prompts, reason = plan.prompts, plan.reason
        else:
            prompts, reason = (request.prompt,) * request.n, "disabled" if request.n == 1 else f"n={request.n}"
        seed = request.seed if request.seed >= 0 else secrets.randbelow(MAX_SEED + 1)
        tasks = tuple(ImageTask(index=i, prompt=p, seed=(seed + i) % (MAX_SEED + 1)) for i, p in enumerate(prompts))
        job = ImageJob(
            model=served.name,
            tasks=tasks,
            width=width,
            height=height,
            references=tuple(ref.image for ref in references),
            guidance_scale=request.guidance_scale,
            fast=request.fast,
            group=request.sequential and len(tasks) > 1,
            request_id=request_id,
            base_prompt=request.prompt,
        )
        self.metrics.stage_seconds.labels("plan").observe(time.perf_counter() - started)

        # 7a. account up front: reserve the planned images against the key (the queue place is held already)
        ticket = JobTicket(key_name=key.name if key is not None else NO_KEY, started=prepare_started)
        if key is not None and self.accounts is not None:
            ticket.reservation = self.accounts.reserve(key, len(tasks))
        ticket.admitted = True
        log.debug("request_id=%s planned %d image(s): %s", request_id, len(tasks), reason)
        return PreparedJob(request, request_id, served, job, int(time.time()), ticket)

    def check_access(self, key: ApiKey, served: ServedModel) -> None:
        """403 unless the key's model list (names or aliases) is empty or names this model."""
        if not key.models:
            return
        allowed = {self._lookup[m].name for m in key.models if m in self._lookup}
        if served.name not in allowed:
            raise AccessDenied(
                f"The API key {key.name!r} is not allowed to use the model {served.name}.", param="model"
            )

    def abandon(self, prepared: PreparedJob) -> None:
        """Release a prepared job that never ran (or make sure one that ran was settled): idempotent."""
        self._settle(prepared, 0, 0, "cancelled")

    def _settle(self, prepared: PreparedJob, delivered: int, tokens: int, status: str) -> None:
        """Step 7: free the queue place, keep the delivered images in the key's window, write the ledger."""
        ticket = prepared.ticket
        if ticket is None or ticket.settled:
            return
        ticket.settled = True
        if ticket.admitted:
            ran = time.perf_counter() - ticket.running_since if ticket.running_since is not None else None
            prepared.served.leave(ran)
        if ticket.reservation is not None:
            ticket.reservation.settle(delivered)
        if self.accounts is not None:
            self.accounts.record(
                UsageRecord(
                    key_name=ticket.key_name,
                    model=prepared.served.name,
                    images=delivered,
                    tokens=tokens,
                    status=status,
                    duration_ms=round((time.perf_counter() - ticket.started) * 1000),
                    request_id=prepared.request_id,
                )
            )

    async def run(self, prepared: PreparedJob) -> AsyncGenerator[Event, None]:
        """Steps 4-7: generate, finish, deliver, account; one event per image, then a final event."""
        request, served = prepared.request, prepared.served
        delivered = tokens = 0
        started = time.perf_counter()
        status = "ok"
        first_failure = ""  # the ledger's status when every image of the job failed
        queue: asyncio.Queue[ImageResult | BaseException | None] = asyncio.Queue(maxsize=1)
        producer = asyncio.create_task(self._produce(prepared, queue))
        self.metrics.inflight.inc()
        self._running += 1
        self._idle.clear()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    # internal failure: stop the group, keep what was delivered
                    error = item if isinstance(item, SeedreamError) else EngineError("Image generation failed.")
                    if not isinstance(item, SeedreamError):
                        log.error("engine failure request_id=%s", prepared.request_id, exc_info=item)
                    status = error.code
                    yield JobAborted(error, Usage(delivered, tokens))
                    return
                if item.error is not None or item.image is None:
                    # 4a. a per-image refusal lets the group go on
                    error = item.error or EngineError("The engine returned no image.")
                    first_failure = first_failure or error.code
                    self.metrics.images.labels(served.name, "failed").inc()
                    yield ImageFailed(item.index, error)
                    continue
                try:
                    await self.moderation.check_output(item.image, prepared.job.tasks[item.index].prompt)
                    # 5-6. finish and deliver
                    event = await self._deliver(prepared, item.index, item.image)
                except SensitiveContentDetected as refused:
                    first_failure = first_failure or refused.code
                    self.metrics.images.labels(served.name, "failed").inc()
                    yield ImageFailed(item.index, refused)
                    continue
                except Exception as exc:  # an image check, encoder or storage failed: stop the group
                    log.error("delivery failure request_id=%s", prepared.request_id, exc_info=exc)
                    error = exc if isinstance(exc, SeedreamError) else EngineError("Delivering the image failed.")
                    status = error.code
                    yield JobAborted(error, Usage(delivered, tokens))
                    return
                delivered += 1
                tokens += image_tokens(event.width, event.height)
                self.metrics.images.labels(served.name, "succeeded").inc()
                yield event
            # 7. account
            yield JobCompleted(Usage(delivered, tokens))
        except (asyncio.CancelledError, GeneratorExit):
            if status == "ok":  # closed after an abort keeps the abort's code
                status = "cancelled"
            raise
        finally:
            # the caller may be cancelled (client gone): clean up and account inside a shield, since
            # any unshielded await here would be cancelled again and skip the accounting
            producer.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(producer, return_exceptions=True)
            self.metrics.inflight.dec()
            if status == "ok" and delivered == 0 and first_failure:
                status = first_failure
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(served.name, status).inc()
            self.metrics.request_seconds.labels(served.name).observe(elapsed)
            log.info(
                "request_id=%s model=%s images=%d/%d status=%s duration_ms=%.0f user=%r",
                prepared.request_id,
                served.name,
                delivered,
                len(prepared.job.tasks),
                status,
                elapsed * 1000,
                request.user or "-",
            )
            self._settle(prepared, delivered, tokens, status)
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def _produce(self, prepared: PreparedJob, queue: asyncio.Queue[ImageResult | BaseException | None]) -> None:
        """Step 4: run the engine in a slot, handing results over one at a time."""
        served = prepared.served
        gauge = self.metrics.queue_depth.labels(served.name)
        gauge.inc()
        waiting = True
        try:
            async with served.slots:
                gauge.dec()
                waiting = False
                if prepared.ticket is not None:
                    prepared.ticket.running_since = time.perf_counter()
                results = served.engine.generate(prepared.job)
                try:
                    last = time.perf_counter()
                    async for result in results:
                        now = time.perf_counter()
                        self.metrics.stage_seconds.labels("generate").observe(now - last)
                        await queue.put(result)
                        last = time.perf_counter()
                finally:
                    aclose = getattr(results, "aclose", None)
                    if aclose is not None:
                        await aclose()
            await queue.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which reports it
            await queue.put(exc)
        finally:
            if waiting:
                gauge.dec()

    def _finish(self, prepared: PreparedJob, image: Image.Image, name: str) -> tuple[bytes, int, int]:
        """Step 5 (in a worker thread): resize, watermark, provenance, encode."""
        request, job = prepared.request, prepared.job
        started = time.perf_counter()
        image = postprocess.resize_to(image, job.width, job.height)
        if request.watermark:
            image = postprocess.add_watermark(image, self.settings.watermark_text)
        provenance = postprocess.Provenance(
            model=job.model,
            content_id=name,
            created=prepared.created,
            watermarked=request.watermark,
            engine=prepared.served.engine.kind,
        )
        data = postprocess.encode_image(
            image, provenance=provenance, output_format=request.output_format, quality=self.settings.jpeg_quality
        )
        self.metrics.stage_seconds.labels("encode").observe(time.perf_counter() - started)
        return data, image.width, image.height

    async def _deliver(self, prepared: PreparedJob, index: int, image: Image.Image) -> ImageDelivered:
        """Steps 5-6: finish off the event loop, then store durably (or inline as base64)."""
        name = f"{prepared.request_id}_{index}"
        data, width, height = await asyncio.to_thread(self._finish, prepared, image, name)
        if prepared.request.response_format == "b64_json":
            return ImageDelivered(index, width, height, b64_json=base64.b64encode(data).decode("ascii"))
        started = time.perf_counter()
        ext = prepared.request.output_format
        stored = await self.storage.put(f"{name}.{ext}", data)
        self.metrics.stage_seconds.labels("store").observe(time.perf_counter() - started)
        return ImageDelivered(index, width, height, url=stored.url)
