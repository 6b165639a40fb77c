"""Loading a diffusers model onto a device and calling it: everything that touches torch lives here.

:class:`PipelineRunner` is built on the device's worker thread (:meth:`PipelineRunner.load`) and only
ever called there (:meth:`PipelineRunner.run`). It maps a batch of work items onto one pipeline call
for the model's family: a prompt list with one seeded generator per image for text-to-image, the
img2img pipeline (``AutoPipelineForImage2Image.from_pipe``, sharing the weights) for one reference on
SD/SDXL/FLUX.1/Qwen-Image, the edit image for Kontext/Qwen-Image-Edit, and the reference list for
FLUX.2 and Qwen-Image-Edit Plus. The step callback counts progress and raises
:class:`~.worker.Interrupted` when the call should stop.

torch, diffusers and transformers are imported at run time through :func:`stack` (typed ``Any``): the
server imports and starts without them, and the engine says how to install them when it is asked for.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, ImageOps

from . import speed
from .families import Family, ModelInfo, ModelSetupError
from .loading import _qwen_processor, resolve_dtype, stack
from .options import DiffusersOptions
from .worker import Drawn, EngineStats, Interrupted, WorkItem

log = logging.getLogger("seedream_server.engines.diffusers")


class Drawing(Protocol):
    """What one pipeline call needs of an image to draw (a :class:`~.worker.WorkItem`, or a warm-up image)."""

    @property
    def prompt(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def guidance(self) -> float: ...
    @property
    def references(self) -> tuple[Image.Image, ...]: ...
    @property
    def layers(self) -> int: ...


@dataclass(frozen=True)
class WarmupImage:
    """An image of the start-up warm-up call."""

    prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    references: tuple[Image.Image, ...] = ()
    layers: int = 0


@dataclass
class PipelineRunner:
    """A loaded model on its device. Built and called on the device's worker thread only."""

    name: str
    info: ModelInfo
    options: DiffusersOptions
    device: str
    dtype: str
    pipe: Any
    img2img: Any
    size_multiple: int
    stats: EngineStats
    on_step: Callable[[Any, int, int], None] | None = None
    closing: bool = False
    #: the step count the step cache was built for (MagCache schedules its skips over a fixed count)
    cache_steps: int = 0
    #: seconds of each start-up warm-up call (empty when no speed option asked for one)
    warmup_seconds: list[float] = field(default_factory=list)

    @property
    def family(self) -> Family:
        return self.info.family

    @property
    def batchable(self) -> bool:
        return self.family.batchable

    @property
    def max_batch_size(self) -> int:
        return self.options.max_batch_size

    @property
    def batch_window_s(self) -> float:
        return self.options.batch_window_ms / 1000

    @classmethod
    def load(
        cls, name: str, model_dir: Path, info: ModelInfo, options: DiffusersOptions, device: str, stats: EngineStats
    ) -> PipelineRunner:
        """Load the pipeline (and its img2img twin, sharing weights) onto ``device``."""
        torch = stack("torch")
        diffusers = stack("diffusers")
        dtype = resolve_dtype(options.dtype, device)
        # diffusers 0.41 renamed torch_dtype to dtype (the old name warns)
        version = tuple(int(part) for part in diffusers.__version__.split(".")[:2] if part.isdigit())
        kwargs: dict[str, Any] = {"dtype" if version >= (0, 41) else "torch_dtype": getattr(torch, dtype)}
        if options.variant:
            kwargs["variant"] = options.variant
        if (
            info.family.name.startswith(("qwen-image-edit", "qwen-image-layered"))
            and (model_dir / "processor").is_dir()
        ):
            kwargs["processor"] = _qwen_processor(model_dir)
        kwargs.update(speed.load_arguments(name, model_dir, info, options, dtype, stack))
        # klein's KV variant may be saved under Flux2KleinPipeline: load it as what detection found
        loader = getattr(diffusers, info.pipeline_class) if info.family.name == "flux2-klein-kv" else None
        try:
            pipe = (loader or diffusers.DiffusionPipeline).from_pretrained(str(model_dir), **kwargs)
        except Exception as exc:
            raise ModelSetupError(f"model {name!r}: cannot load {model_dir}: {speed.one_line(exc)}") from exc
        if "Img2Img" in type(pipe).__name__:  # a checkpoint saved as img2img: its text-to-image twin
            pipe = diffusers.AutoPipelineForText2Image.from_pipe(pipe)
        _place(name, pipe, options.offload, device)
        pipe.set_progress_bar_config(disable=True)
        steps = options.steps or info.steps
        speed.apply(name, pipe, info, options, steps, stack)
        img2img = None
        if info.family.reference_mode == "img2img":
            img2img = diffusers.AutoPipelineForImage2Image.from_pipe(pipe)
            img2img.set_progress_bar_config(disable=True)
        multiple = options.size_multiple or int(getattr(pipe, "vae_scale_factor", 8)) * 2
        log.info(
            "model %s: %s (%s) on %s as %s, native %d px, multiple %d, %d steps",
            name,
            info.family.description,
            type(pipe).__name__,
            device,
            dtype,
            options.native_pixels or info.native_pixels,
            multiple,
            options.steps or info.steps,
        )
        runner = cls(name, info, options, device, dtype, pipe, img2img, multiple, stats, cache_steps=steps)
        if options.speed:
            runner.warm_up()
        return runner

    def warm_up(self) -> None:
        """The start-up probe: one call per warm-up size (and a batch of two where the model batches and compiles),
        with the configured steps, through the call requests take. A speed option that fails here stops the start
        with one line; a compiled model compiles here, not on a user's request."""
        info, options = self.info, self.options
        steps = options.steps or info.steps
        guidance = options.guidance_scale if options.guidance_scale is not None else info.guidance_scale
        image = speed.probe_image(info)
        references = (image,) if image is not None else ()
        layers = min(2, options.layers) if info.family.layered else 0
        batches: list[list[WarmupImage]] = []
        for width, height in speed.warmup_sizes(options, info, self.size_multiple):
            one = WarmupImage("warm-up", 0, width, height, steps, guidance, references, layers)
            batches.append([one])
            if options.compile != "none" and self.batchable and self.max_batch_size > 1 and not references:
                batches.append([one, WarmupImage("warm-up 2", 1, width, height, steps, guidance)])
        stats, on_step = self.stats, self.on_step
        self.stats, self.on_step = EngineStats(), None  # the warm-up is not a request: count nothing
        try:
            for batch in batches:
                started = time.perf_counter()
                self._call(batch, lambda: False)
                self.warmup_seconds.append(time.perf_counter() - started)
        except ModelSetupError:
            raise
        except Exception as exc:
            raise ModelSetupError(speed.probe_failure(self.name, options, info, exc, stack)) from exc
        finally:
            self.stats, self.on_step = stats, on_step
        log.info(
            "model %s: speed options %s warmed up in %s s",
            self.name,
            options.speed,
            ", ".join(f"{seconds:.1f}" for seconds in self.warmup_seconds),
        )

    def unload(self) -> None:
        self.pipe = self.img2img = None
        torch = stack("torch")
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # -- one pipeline call ---------------------------------------------------------------------------

    def run(self, batch: list[WorkItem], should_stop: Callable[[], bool]) -> list[Drawn]:
        """Draw ``batch`` (compatible items) in one pipeline call; raise ``Interrupted`` if told to stop."""
        return self._call(batch, should_stop)

    def _call(self, batch: Sequence[Drawing], should_stop: Callable[[], bool]) -> list[Drawn]:
        if should_stop():
            raise Interrupted("stopped before the call")
        pipe, kwargs = self._call_arguments(batch)
        if self.options.cache == "magcache" and kwargs["num_inference_steps"] != self.cache_steps:
            # MagCache spreads its skips over a fixed step count: rebuild it for this call's
            speed.enable_cache(self.name, self.pipe, self.info, self.options, kwargs["num_inference_steps"], stack)
            self.cache_steps = kwargs["num_inference_steps"]
        stats = self.stats

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            stats.steps += 1
            total = int(getattr(pipeline, "_num_timesteps", 0) or kwargs["num_inference_steps"])
            if self.on_step is not None:
                for item in batch:
                    self.on_step(item, step + 1, total)
            if should_stop():
                raise Interrupted(f"stopped after step {step + 1}/{total}")
            return {}

        stats.pipeline_calls += 1
        stats.largest_batch = max(stats.largest_batch, len(batch))
        stats.references += sum(len(item.references) for item in batch)
        torch = stack("torch")
        try:
            with torch.inference_mode():
                output = pipe(**kwargs, callback_on_step_end=on_step_end)
        except BaseException:
            # a call that stopped half-way leaves the step cache's state behind (the pipeline resets it at the end)
            denoiser: Any = getattr(pipe, speed.denoiser_name(pipe), None)
            if self.options.cache != "none" and hasattr(denoiser, "_reset_stateful_cache"):
                denoiser._reset_stateful_cache()
            raise
        images: list[Drawn] = list(output.images)
        if self.family.layered:  # one list of RGBA layers per prompt
            images = [tuple(layers) for layers in output.images]
        if len(images) != len(batch):
            raise RuntimeError(f"the pipeline returned {len(images)} images for {len(batch)} prompts")
        stats.images += len(images)
        return images

    def _generator(self, seed: int) -> Any:
        torch = stack("torch")
        # seeded on the device that draws the noise (CPU for MPS, whose generators diffusers avoids)
        return torch.Generator("cpu" if self.device.startswith("mps") else self.device).manual_seed(seed)

    def _call_arguments(self, batch: Sequence[Drawing]) -> tuple[Any, dict[str, Any]]:
        """The pipeline to call and its arguments for ``batch``."""
        family, first = self.family, batch[0]
        if family.layered:
            return self.pipe, self._layered_arguments(first)
        width, height = first.width, first.height
        pipe = self.pipe
        kwargs: dict[str, Any] = {
            "height": height,
            "width": width,
            "num_inference_steps": first.steps,
            "output_type": "pil",
        }
        if family.guidance_arg:
            kwargs[family.guidance_arg] = first.guidance
        if len(batch) == 1:
            kwargs["prompt"] = first.prompt
            kwargs["generator"] = self._generator(first.seed)
        else:
            kwargs["prompt"] = [item.prompt for item in batch]
            kwargs["generator"] = [self._generator(item.seed) for item in batch]
        if family.negative_prompt and first.guidance > 1:
            kwargs["negative_prompt"] = " " if len(batch) == 1 else [" "] * len(batch)
        references = [ref.convert("RGB") for ref in first.references]
        if references:
            if len(batch) != 1:
                raise RuntimeError("reference calls are never batched")
            if family.reference_mode == "img2img":
                pipe = self.img2img
                strength = self.options.strength
                kwargs["image"] = ImageOps.fit(references[0], (width, height), Image.Resampling.LANCZOS)
                kwargs["strength"] = strength
                # img2img runs steps x strength steps; at least one must run
                kwargs["num_inference_steps"] = max(first.steps, math.ceil(1 / strength))
                accepted = inspect.signature(pipe.__call__).parameters
                for size_arg in ("height", "width"):  # SD/SDXL img2img draw at the (resized) image's size
                    if size_arg not in accepted:
                        kwargs.pop(size_arg)
            elif family.reference_mode == "single":
                kwargs["image"] = references[0]
                if "max_area" in inspect.signature(pipe.__call__).parameters:
                    kwargs["max_area"] = width * height  # Kontext: else it draws at 1024² whatever native_pixels says
            else:
                kwargs["image"] = [_at_least(ref, family.min_reference_side) for ref in references]
        return pipe, kwargs

    def _layered_arguments(self, item: Drawing) -> dict[str, Any]:
        """QwenImageLayeredPipeline: the input image (RGBA) decomposed into ``item.layers`` layers. It draws at
        its own resolution bucket (640 or 1024) with the image's aspect, not at a width and height."""
        if len(item.references) != 1:
            raise RuntimeError("a layered pipeline decomposes exactly one input image")
        kwargs: dict[str, Any] = {
            "image": item.references[0].convert("RGBA"),
            "prompt": item.prompt,
            "layers": item.layers,
            "num_inference_steps": item.steps,
            self.family.guidance_arg: item.guidance,
            "resolution": 1024 if (self.options.native_pixels or self.info.native_pixels) >= 1024 * 1024 else 640,
            "generator": self._generator(item.seed),
            "output_type": "pil",
        }
        if self.family.negative_prompt and item.guidance > 1:
            kwargs["negative_prompt"] = " "
        return kwargs


def _place(name: str, pipe: Any, offload: str, device: str) -> None:
    """Put the pipeline on its device, or set up offloading to it."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        torch = stack("torch")
        try:  # one block at a time; on CUDA the next block's transfer overlaps the current one's compute
            pipe.enable_group_offload(
                onload_device=torch.device(device),
                offload_device=torch.device("cpu"),
                offload_type="block_level",
                num_blocks_per_group=1,
                use_stream=device.startswith("cuda"),
            )
        except (ValueError, RuntimeError, AttributeError) as exc:
            raise ModelSetupError(
                f"model {name!r}: offload = 'group' is not available here: {speed.one_line(exc)}"
            ) from exc
    else:
        pipe.to(device)


def _at_least(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled up (aspect kept) so that its shorter side is at least ``side``."""
    short = min(image.size)
    if side <= 0 or short >= side:
        return image
    scale = side / short
    size = (max(side, math.ceil(image.width * scale)), max(side, math.ceil(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)
