"""Speed options of a diffusers model (``cache``, ``compile``, ``quantization``, ``attention_backend``, ``vae``,
``channels_last``, group offload): diffusers' own APIs applied to a loaded pipeline, and the start-up probe.

Each option goes through the API diffusers documents for it: ``transformer.enable_cache(<Method>Config)``
(FirstBlockCache, TaylorSeer, MagCache, FasterCache), ``compile_repeated_blocks`` / ``torch.compile``,
``PipelineQuantizationConfig`` (torchao, bitsandbytes) at load time, ``set_attention_backend`` (the attention
dispatcher), ``vae.enable_tiling`` / ``enable_slicing`` or an ``AutoencoderTiny`` in place of the VAE.

Whether an option works depends on the family, the checkpoint and the installed diffusers/torch (diffusers
0.42.1's FirstBlockCache fails on FLUX.2 klein and Qwen-Image at the second step; FP8 needs a recent GPU), and
a table of what works would be out of date with the next release. So the engine proves it at start-up:
:func:`warm_up` draws one image per warm-up size with the configured steps, through the same call the
requests take; an option that fails there stops the server with one line naming it, and a request never
meets it. The same call compiles (``compile``), so no request pays compilation.

Like ``pipelines``, this module imports torch and diffusers only at run time (through ``stack``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from .families import ModelInfo, ModelSetupError, native_size
from .options import DiffusersOptions

log = logging.getLogger("seedream_server.engines.diffusers")

Stack = Callable[[str], Any]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def denoiser_name(pipe_or_dir: Any) -> str:
    """``transformer`` or ``unet``: the component that runs every step."""
    if isinstance(pipe_or_dir, Path):
        return "transformer" if (pipe_or_dir / "transformer").is_dir() else "unet"
    return "transformer" if getattr(pipe_or_dir, "transformer", None) is not None else "unet"


# -- at load time (arguments of from_pretrained) ---------------------------------------------------------


def load_arguments(
    name: str, model_dir: Path, info: ModelInfo, options: DiffusersOptions, dtype: str, stack: Stack
) -> dict[str, Any]:
    """Extra ``from_pretrained`` arguments: the quantization config and a tiny VAE (checked before any weight
    is read: a missing package is a one-line refusal, not a traceback)."""
    kwargs: dict[str, Any] = {}
    if options.quantization != "none":
        kwargs["quantization_config"] = _quantization_config(name, model_dir, options.quantization, dtype, stack)
    if options.vae == "tiny":
        kwargs["vae"] = _tiny_vae(name, info, options, dtype, stack)
    return kwargs


def _quantization_config(name: str, model_dir: Path, method: str, dtype: str, stack: Stack) -> Any:
    diffusers, torch = stack("diffusers"), stack("torch")
    component = denoiser_name(model_dir)
    if method == "nf4":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelSetupError(
                f"model {name!r}: quantization = 'nf4' needs bitsandbytes, which is not installed "
                "(pip install bitsandbytes)"
            )
        config = diffusers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=getattr(torch, dtype)
        )
    else:
        if importlib.util.find_spec("torchao") is None:
            raise ModelSetupError(
                f"model {name!r}: quantization = {method!r} needs torchao >= 0.15, which is not installed "
                "(pip install torchao)"
            )
        quantization = stack("torchao.quantization")
        classes = {
            "int8wo": "Int8WeightOnlyConfig",
            "fp8wo": "Float8WeightOnlyConfig",
            "fp8": "Float8DynamicActivationFloat8WeightConfig",
        }
        try:
            config = diffusers.TorchAoConfig(getattr(quantization, classes[method])())
        except Exception as exc:
            raise ModelSetupError(
                f"model {name!r}: quantization = {method!r} is not available with torchao {_version('torchao')} and "
                f"diffusers {diffusers.__version__}: {one_line(exc)}"
            ) from exc
    return diffusers.PipelineQuantizationConfig(quant_mapping={component: config})


def _tiny_vae(name: str, info: ModelInfo, options: DiffusersOptions, dtype: str, stack: Stack) -> Any:
    if not info.family.tiny_vae:
        raise ModelSetupError(
            f"model {name!r}: vae = 'tiny' is not available for {info.family.description} (an AutoencoderTiny "
            "exists for SD, SDXL and FLUX.1 latents)"
        )
    source = Path(str(options.tiny_vae_source)).expanduser()
    if not (source / "config.json").is_file():
        raise ModelSetupError(f"model {name!r}: tiny_vae_source {str(source)!r} is not an AutoencoderTiny directory")
    diffusers, torch = stack("diffusers"), stack("torch")
    try:
        return diffusers.AutoencoderTiny.from_pretrained(str(source), torch_dtype=getattr(torch, dtype))
    except Exception as exc:
        raise ModelSetupError(f"model {name!r}: cannot load the tiny VAE {str(source)!r}: {one_line(exc)}") from exc


# -- on the loaded pipeline ------------------------------------------------------------------------------


def apply(name: str, pipe: Any, info: ModelInfo, options: DiffusersOptions, steps: int, stack: Stack) -> None:
    """Attention backend, VAE tiling/slicing, channels_last, the step cache and compilation, in that order
    (compilation last, so that it sees the hooks and the backend)."""
    denoiser = getattr(pipe, denoiser_name(pipe))
    if options.attention_backend is not None:
        try:
            denoiser.set_attention_backend(options.attention_backend)
        except (ValueError, RuntimeError, ImportError) as exc:
            raise ModelSetupError(
                f"model {name!r}: attention_backend = {options.attention_backend!r} is not usable here: {one_line(exc)}"
            ) from exc
    if options.vae not in {"none", "tiny"}:
        for mode in options.vae.split(","):
            method = {"tiled": "enable_tiling", "sliced": "enable_slicing"}[mode]
            try:
                getattr(pipe.vae, method)()
            except (AttributeError, NotImplementedError) as exc:
                raise ModelSetupError(
                    f"model {name!r}: vae = {options.vae!r}: {type(pipe.vae).__name__} has no {mode} decoding"
                ) from exc
    if options.channels_last:
        torch = stack("torch")
        for part in ("unet", "vae"):
            module = getattr(pipe, part, None)
            if module is None:
                continue
            try:
                module.to(memory_format=torch.channels_last)
            except RuntimeError as exc:
                raise ModelSetupError(
                    f"model {name!r}: channels_last does not apply to {info.family.description}'s {part} "
                    f"({type(module).__name__}): {one_line(exc)}"
                ) from exc
    if options.cache != "none":
        enable_cache(name, pipe, info, options, steps, stack)
    if options.compile != "none":
        # a cache's hooks leave regions to eager mode (torch.compiler.disable): no full graph with them
        _compile(name, denoiser, options.compile, fullgraph=options.cache == "none")


def enable_cache(name: str, pipe: Any, info: ModelInfo, options: DiffusersOptions, steps: int, stack: Stack) -> None:
    """``denoiser.enable_cache(config)`` for ``options.cache`` (again after ``disable_cache`` when MagCache needs
    another step count)."""
    denoiser = getattr(pipe, denoiser_name(pipe))
    if not hasattr(denoiser, "enable_cache"):
        raise ModelSetupError(
            f"model {name!r}: cache = {options.cache!r} needs a transformer with diffusers' cache hooks; "
            f"{info.family.description}'s {type(denoiser).__name__} has none"
        )
    config = _cache_config(name, pipe, info, options, steps, stack)
    try:
        if getattr(denoiser, "is_cache_enabled", False):
            denoiser.disable_cache()
        denoiser.enable_cache(config)
    except Exception as exc:
        raise ModelSetupError(
            f"model {name!r}: cache = {options.cache!r} cannot be set on {info.family.description}'s "
            f"{type(denoiser).__name__} with diffusers {stack('diffusers').__version__}: {one_line(exc)}"
        ) from exc


def _cache_config(name: str, pipe: Any, info: ModelInfo, options: DiffusersOptions, steps: int, stack: Stack) -> Any:
    hooks = stack("diffusers.hooks")
    if options.cache == "first-block":
        return hooks.FirstBlockCacheConfig(threshold=options.cache_threshold or 0.05)
    if options.cache == "taylorseer":
        return hooks.TaylorSeerCacheConfig(
            cache_interval=options.cache_interval or 5,
            disable_cache_before_step=3 if options.cache_warmup_steps is None else options.cache_warmup_steps,
            taylor_factors_dtype=denoiser_dtype(pipe),  # the model's own (bf16 on GPU, fp32 on CPU)
        )
    if options.cache == "faster":
        return hooks.FasterCacheConfig(
            spatial_attention_block_skip_range=options.cache_interval or 2,
            current_timestep_callback=lambda: pipe.current_timestep,
            # the families here run the unconditional branch as a call of its own (or not at all)
            is_guidance_distilled=True,
            tensor_format="BCHW",
        )
    ratios: Any = options.mag_ratios
    if ratios is None:
        if info.family.name not in {"flux", "flux-kontext"}:
            raise ModelSetupError(
                f"model {name!r}: cache = 'magcache' needs cache_mag_ratios for {info.family.description} "
                "(diffusers ships ratios for FLUX.1 only; calibrate with MagCacheConfig(calibrate=True))"
            )
        ratios = stack("diffusers.hooks.mag_cache").FLUX_MAG_RATIOS
    return hooks.MagCacheConfig(
        threshold=options.cache_threshold or 0.06,
        max_skip_steps=options.cache_interval or 3,
        num_inference_steps=steps,
        mag_ratios=ratios,
    )


def denoiser_dtype(pipe: Any) -> Any:
    return getattr(getattr(pipe, denoiser_name(pipe)), "dtype", None)


def _compile(name: str, denoiser: Any, mode: str, fullgraph: bool) -> None:
    try:
        if mode == "regional":
            denoiser.compile_repeated_blocks(fullgraph=fullgraph)
        else:
            denoiser.compile(fullgraph=fullgraph)
    except (ValueError, RuntimeError) as exc:
        raise ModelSetupError(f"model {name!r}: compile = {mode!r} is not available here: {one_line(exc)}") from exc


# -- the start-up probe and warm-up ----------------------------------------------------------------------


def warmup_sizes(options: DiffusersOptions, info: ModelInfo, multiple: int) -> list[tuple[int, int]]:
    """The generation sizes to warm up: the configured ones (rounded to the size multiple), else the native
    square size."""
    pixels = options.native_pixels or info.native_pixels
    sizes = [native_size(w, h, w * h, multiple) for w, h in options.warmup] or [native_size(1, 1, pixels, multiple)]
    return list(dict.fromkeys(sizes))


def probe_failure(name: str, options: DiffusersOptions, info: ModelInfo, exc: BaseException, stack: Stack) -> str:
    """The one-line start-up error of a speed option that failed in the warm-up call."""
    chosen = ", ".join(f"{key} = {value!r}" for key, value in options.speed.items())
    return (
        f"model {name!r}: {chosen} does not run on {info.family.description} ({info.pipeline_class}) with diffusers "
        f"{stack('diffusers').__version__}, torch {stack('torch').__version__}: the start-up probe failed with "
        f"{one_line(exc)}; leave the option out (or try the others alone)"
    )


def probe_image(info: ModelInfo) -> Image.Image | None:
    """A reference for the warm-up call of families that cannot draw from a prompt alone."""
    if info.family.layered:
        return Image.new("RGBA", (64, 64), (128, 96, 64, 255))
    if info.family.needs_image or info.family.reference_mode == "single":
        return Image.new("RGB", (64, 64), (128, 96, 64))
    return None


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its type and message, whitespace folded, at most 300 characters."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
