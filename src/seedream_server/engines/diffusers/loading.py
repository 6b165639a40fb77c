"""Finding what a diffusers model needs before it is loaded: the optional torch/diffusers/transformers
stack (imported at run time, typed ``Any``), the device and dtype, and the model directory (a local path
or a hub id, from the cache unless downloads are allowed)."""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

from .families import ModelSetupError
from .options import DiffusersOptions, looks_like_hub_id

INSTALL_HINT = "pip install 'seedream-server[diffusers]'"
_STACK = ("torch", "diffusers", "transformers")


def missing_stack() -> list[str]:
    """The modules of the diffusers extra that are not installed (cheap: nothing is imported)."""
    return [name for name in _STACK if importlib.util.find_spec(name) is None]


def require_stack() -> None:
    missing = missing_stack()
    if missing:
        raise ModelSetupError(
            f"the diffusers engine needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            f"not installed: {INSTALL_HINT}"
        )


@cache
def stack(name: str) -> Any:
    """Import one module of the diffusers stack (``torch``, ``diffusers``, ``transformers``)."""
    require_stack()
    return importlib.import_module(name)


def resolve_device(requested: str | None) -> str:
    """The device to run on: as configured, else cuda, then mps, then cpu."""
    torch = stack("torch")
    if requested:
        kind = requested.split(":")[0]
        if kind == "cuda" and not torch.cuda.is_available():
            raise ModelSetupError(f"device {requested!r} was asked for, but torch sees no CUDA device")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise ModelSetupError(f"device {requested!r} was asked for, but torch sees no MPS device")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(requested: str | None, device: str) -> str:
    """The weight dtype: as configured, else bf16 on CUDA (fp16 where unsupported) and MPS fp16, fp32 on CPU."""
    if requested:
        return requested
    torch = stack("torch")
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.startswith("mps"):
        return "float16"
    return "float32"


def resolve_source(options: DiffusersOptions) -> Path:
    """A local model directory for ``options.source``: the directory itself, or the hub id's cached snapshot.

    A hub id loads from the local Hugging Face cache only, unless ``allow_download`` is set.
    """
    path = Path(options.source).expanduser()
    if path.is_dir():
        return path
    if not looks_like_hub_id(options.source) or path.exists():
        raise ModelSetupError(f"model directory {options.source!r} does not exist")
    diffusers = stack("diffusers")
    try:
        folder = diffusers.DiffusionPipeline.download(
            options.source,
            local_files_only=not options.allow_download,
            revision=options.revision,
            variant=options.variant,
        )
    except Exception as exc:
        if options.allow_download:
            raise ModelSetupError(f"cannot download {options.source!r}: {exc}") from exc
        raise ModelSetupError(
            f"{options.source!r} is not a local directory and is not in the local Hugging Face cache "
            f"(downloads are off: set allow_download = true, or fetch it first with "
            f"`hf download {options.source}`): {exc}"
        ) from exc
    return Path(folder)


@cache
def _image_only_processor_class() -> Any:
    """``Qwen2VLProcessor`` without its video processor (which needs torchvision) - images are all we use."""
    transformers = stack("transformers")

    class ImageOnlyQwen2VLProcessor(transformers.Qwen2VLProcessor):  # type: ignore[misc,name-defined]
        def __init__(
            self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
        ) -> None:
            super().__init__(
                image_processor=image_processor,
                tokenizer=tokenizer,
                video_processor=None,
                chat_template=chat_template,
                **kwargs,
            )

    return ImageOnlyQwen2VLProcessor


def _qwen_processor(model_dir: Path) -> Any:
    """The Qwen2-VL processor of an edit checkpoint, built so that it loads without torchvision."""
    transformers = stack("transformers")
    folder = model_dir / "processor"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    if transformers.utils.is_torchvision_available():
        image_processor = transformers.AutoImageProcessor.from_pretrained(str(folder))
    else:
        try:  # transformers 5: the PIL backend; before it, the default processor needed no torchvision
            module = importlib.import_module("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
            image_processor_class = module.Qwen2VLImageProcessorPil
        except ImportError:
            image_processor_class = transformers.Qwen2VLImageProcessor
        image_processor = image_processor_class.from_pretrained(str(folder))
    return _image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer)
