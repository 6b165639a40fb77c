"""``DiffusersEngine``: one configured diffusers model behind the :class:`~..base.Engine` ABC.

Life of a job:

1. plan - the generation size is the model's native pixel budget at the delivered aspect ratio (sides
   rounded to the model's multiple; the service resizes to the delivered size); steps and guidance come
   from the request (``fast``, ``guidance_scale``), the options, then the family's defaults.
2. submit - each image is a :class:`~.worker.WorkItem` on the device's worker thread, seeded with its
   task's seed. Independent images go ahead (up to ``max_batch_size`` at a time, so that the worker can
   batch them, with each other and with other jobs); in a group on a multi-reference family each image
   waits for the previous one, which joins its references (``group_feed_forward``).
3. yield - results in index order, each as soon as it is ready.
3b. layers - a layered family (Qwen-Image-Layered) takes a ``layer_decomposition`` job with one input image:
   one call draws ``layers`` RGBA layers; the job yields the base (the layers composited, index 0) and the
   layers (:func:`layer_results`). A layer job on another family, or an ordinary job on a layered one, is a 400.
4. close - when the consumer goes away (client disconnect, shutdown) every item still queued or running
   is cancelled; a running call stops at its next denoising step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from ...errors import EngineError, InvalidParameter, SeedreamError, ServiceUnavailable
from ..base import Engine, EngineCapabilities, ImageJob, ImageResult, ImageTask, Layer, Progress, ProgressHook
from .families import Family, ModelInfo, ModelSetupError, detect, group_references, native_size
from .loading import require_stack, resolve_device, resolve_source
from .options import DiffusersOptions, looks_like_hub_id
from .pipelines import PipelineRunner
from .worker import DeviceWorker, Drawn, EngineStats, Interrupted, WorkItem, acquire_worker, release_worker

log = logging.getLogger("seedream_server.engines.diffusers")

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Plan:
    width: int
    height: int
    steps: int
    guidance: float


class DiffusersEngine(Engine):
    """Serves one diffusers model directory (or cached hub id) on one device."""

    kind = "diffusers"

    def __init__(self, name: str, options: DiffusersOptions) -> None:
        require_stack()
        self.name = name
        self.options = options
        #: counters of pipeline calls, images, steps, interruptions (metric-friendly plain ints)
        self.stats = EngineStats()
        #: called from the worker thread after every denoising step of every image; keep hooks quick
        self.progress_hooks: list[ProgressHook] = []
        self._info: ModelInfo | None = None
        self._runner: PipelineRunner | None = None
        self._worker: DeviceWorker | None = None
        self._inflight: set[WorkItem] = set()
        local = Path(options.source).expanduser()
        if local.is_dir():  # fail fast on a directory that is not a model
            self._info = self._named(detect, local, options.source)
            self._check_limits(self._info)
        elif not looks_like_hub_id(options.source):
            raise ModelSetupError(f"model {name!r}: model directory {options.source!r} does not exist")

    def add_progress_hook(self, hook: ProgressHook) -> None:
        self.progress_hooks.append(hook)

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> DiffusersEngine:
        """Build from a model's name and its raw option table (``[[models]]`` keys beyond name/engine)."""
        return cls(name, DiffusersOptions.parse(name, dict(options)))

    def _named(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Call ``fn``, prefixing a set-up error's message with this model's name."""
        try:
            return fn(*args)
        except ModelSetupError as exc:
            if str(exc).startswith("model "):
                raise
            raise ModelSetupError(f"model {self.name!r}: {exc}") from exc

    def _check_limits(self, info: ModelInfo) -> None:
        wanted = self.options.max_references
        if wanted is not None and wanted > info.family.max_references:
            raise ModelSetupError(
                f"model {self.name!r}: max_references = {wanted}, but {info.family.description} takes at most "
                f"{info.family.max_references}"
            )

    # -- Engine ----------------------------------------------------------------------------------------

    @property
    def capabilities(self) -> EngineCapabilities:
        info = self._info
        if info is None:  # a hub id before start(): nothing is known yet
            return EngineCapabilities(max_references=0, description=f"diffusers model {self.options.source} (loading)")
        limit = info.family.max_references
        if self.options.max_references is not None:
            limit = min(limit, self.options.max_references)
        return EngineCapabilities(
            max_references=limit,
            reference_pixels=self.options.native_pixels or info.native_pixels,
            layer_decomposition=info.family.layered,
            description=f"{info.family.description} ({info.pipeline_class}) via diffusers: {self.options.source}",
        )

    @property
    def info(self) -> ModelInfo | None:
        """The detected family and defaults (``None`` for a hub id until :meth:`start`)."""
        return self._info

    async def start(self) -> None:
        """Resolve the source, pick the device, and load the pipeline on the device's worker thread."""
        started = time.perf_counter()
        model_dir = await asyncio.to_thread(self._named, resolve_source, self.options)
        info = await asyncio.to_thread(self._named, detect, model_dir, self.options.source)
        self._check_limits(info)
        device = await asyncio.to_thread(self._named, resolve_device, self.options.device)
        worker = acquire_worker(device)
        try:
            runner = await worker.call(
                lambda: PipelineRunner.load(self.name, model_dir, info, self.options, device, self.stats)
            )
        except BaseException:
            await self._release(worker)
            raise
        runner.on_step = self._on_step
        self._info, self._runner, self._worker = info, runner, worker
        log.info("model %s ready on %s in %.1f s", self.name, device, time.perf_counter() - started)

    async def aclose(self) -> None:
        """Stop this model's work (running calls stop at their next step) and give the device back."""
        runner, worker = self._runner, self._worker
        self._runner = self._worker = None
        for item in list(self._inflight):
            item.abort(EngineError(f"Generation stopped: the model {self.name} is shutting down."))
        self._inflight.clear()
        if runner is None or worker is None:
            return
        runner.closing = True
        with contextlib.suppress(RuntimeError):  # the worker already closed
            await worker.call(runner.unload)
        await self._release(worker)

    @staticmethod
    async def _release(worker: DeviceWorker) -> None:
        if release_worker(worker):
            await asyncio.to_thread(worker.join, 30)

    def generation_size(self, width: int, height: int) -> tuple[int, int]:
        """The size this model draws for a delivered ``width`` x ``height``: its native pixel budget at that
        aspect ratio, sides rounded to its size multiple."""
        runner, info = self._runner, self._info
        if runner is None or info is None:
            raise ServiceUnavailable(f"The model {self.name} is not loaded.")
        pixels = self.options.native_pixels or info.native_pixels
        return native_size(width, height, pixels, runner.size_multiple)

    def plan(self, job: ImageJob) -> _Plan:
        """Generation size, steps and guidance of ``job`` (see the module docstring)."""
        runner = self._runner
        info = self._info
        if runner is None or info is None:
            raise ServiceUnavailable(f"The model {self.name} is not loaded.")
        options = self.options
        width, height = self.generation_size(job.width, job.height)
        steps = options.steps or info.steps
        if job.fast:
            steps = options.fast_steps or max(1, steps // 2)
        guidance = job.guidance_scale
        if guidance is None:
            guidance = options.guidance_scale if options.guidance_scale is not None else info.guidance_scale
        return _Plan(width, height, steps, float(guidance))

    def _check_layers(self, job: ImageJob, family: Family) -> int:
        """Layers to draw for ``job`` (0: an ordinary job); a 400 when the job and the pipeline disagree."""
        if job.layer_decomposition != family.layered:
            what = "only decomposes an input image" if family.layered else "does not decompose images into layers"
            raise InvalidParameter(
                f"The parameter `layer_decomposition` is not valid for model {self.name}: it {what} "
                f"({family.description}).",
                param="layer_decomposition",
            )
        if not family.layered:
            return 0
        if len(job.references) != 1:
            raise InvalidParameter(
                f"The parameter `image` must be one image for model {self.name}: {family.description} decomposes "
                "an input image into layers (it does not draw from a prompt alone).",
                param="image",
            )
        return max(0, min(self.options.layers, len(job.tasks) - 1))

    async def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        plan = self.plan(job)
        runner, worker = self._runner, self._worker
        assert runner is not None and worker is not None
        layers = self._check_layers(job, runner.family)
        if layers:
            item = self._submit(worker, runner, job, job.tasks[0], plan, list(job.references), layers)
            try:
                drawn = await self._outcome(job, item)
            finally:  # the consumer went away (or the call failed): the call must not go on
                if not item.future.done() or item.future.cancelled():
                    item.cancel()
                    self._inflight.discard(item)
            for result in layer_results(drawn):
                yield result
            return
        limit = self.capabilities.max_references
        user_refs = list(job.references)
        feed = self.options.group_feed_forward and job.group and limit > 1
        ahead = 1 if feed else max(1, self.options.max_batch_size)
        tasks = iter(job.tasks)
        inflight: deque[WorkItem] = deque()
        outputs: list[Image.Image] = []
        try:
            while True:
                # 1. keep up to `ahead` images queued so the worker can batch them
                while len(inflight) < ahead and (task := next(tasks, None)) is not None:
                    if self._runner is None:
                        raise EngineError(f"Generation stopped: the model {self.name} is shutting down.")
                    refs = group_references(user_refs, outputs, limit) if feed else user_refs
                    inflight.append(self._submit(worker, runner, job, task, plan, refs))
                if not inflight:
                    return
                # 2. the oldest image, as soon as it is ready
                item = inflight[0]
                image = await self._outcome(job, item)
                inflight.popleft()
                assert isinstance(image, Image.Image)
                outputs.append(image)
                yield ImageResult(index=item.index, image=image)
        finally:
            # 3. the consumer is gone (or we failed): nothing queued or running for this job may go on
            for pending in inflight:
                pending.cancel()
                self._inflight.discard(pending)

    async def _outcome(self, job: ImageJob, item: WorkItem) -> Drawn:
        """What ``item`` drew, once it is ready; failures become engine errors."""
        try:
            drawn = await item.future
        except Interrupted as exc:
            raise EngineError(f"Generation stopped: the model {self.name} is shutting down.") from exc
        except SeedreamError:
            raise
        except Exception as exc:
            log.error("model %s failed on request_id=%s image %d", self.name, job.request_id, item.index, exc_info=exc)
            raise EngineError(f"The model {self.name} failed while generating image {item.index}.") from exc
        finally:
            if item.future.done():
                self._inflight.discard(item)
        return drawn

    def _submit(
        self,
        worker: DeviceWorker,
        runner: PipelineRunner,
        job: ImageJob,
        task: ImageTask,
        plan: _Plan,
        references: list[Image.Image],
        layers: int = 0,
    ) -> WorkItem:
        loop = asyncio.get_running_loop()
        item = WorkItem(
            runner=runner,
            request_id=job.request_id,
            index=task.index,
            prompt=task.prompt,
            seed=task.seed,
            width=plan.width,
            height=plan.height,
            steps=plan.steps,
            guidance=plan.guidance,
            references=tuple(references),
            loop=loop,
            future=loop.create_future(),
            layers=layers,
        )
        self._inflight.add(item)
        worker.submit(item)
        return item

    def _on_step(self, item: WorkItem, step: int, total: int) -> None:
        log.debug("model %s request_id=%s image=%d step %d/%d", self.name, item.request_id, item.index, step, total)
        if self.progress_hooks:
            progress = Progress(self.name, item.request_id, item.index, step, total)
            for hook in self.progress_hooks:
                hook(progress)


def layer_results(drawn: Drawn) -> list[ImageResult]:
    """A layered pipeline's RGBA layers (bottom first) as items: the base image (index 0, z 0: the layers
    composited) and one item per layer (z 1..N), each boxed by its visible (alpha > 0) pixels."""
    layers = drawn if isinstance(drawn, tuple) else (drawn,)
    rgba = [layer.convert("RGBA") for layer in layers]
    base = Image.new("RGBA", rgba[0].size, (0, 0, 0, 0))
    for layer in rgba:
        base.alpha_composite(layer)
    width, height = base.size
    what = "Qwen-Image-Layered"
    results = [
        ImageResult(0, image=base, layer=Layer(0, (0, 0, width, height), "base", f"the {len(rgba)} layers composited"))
    ]
    for z, layer in enumerate(rgba, 1):
        box = layer.getchannel("A").getbbox() or (0, 0, 0, 0)
        description = f"layer {z} of {len(rgba)} from {what}, bottom first (the model names no layers)"
        results.append(ImageResult(z, image=layer, layer=Layer(z, box, f"layer {z}", description)))
    return results
