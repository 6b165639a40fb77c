"""Pipeline families: what a diffusers model directory is, what it takes, and at what size it draws.

Pure code (no torch): a family is detected from ``model_index.json`` (``_class_name``) and, where the
class alone does not say enough, from the component configs (the UNet's sample size, FLUX.1's guidance
embedding, FLUX.2 klein's ``is_distilled``). The table below is the single place that says, per
family, how references are fed (none, img2img, one edit image, a list), how many it takes, which
call argument carries the guidance, and the defaults (steps, guidance, native pixel budget).

| family | classes | references |
|---|---|---|
| ``sd`` | StableDiffusionPipeline (1.x, 2.x) | 1 via img2img (``from_pipe``) |
| ``sdxl`` | StableDiffusionXLPipeline (incl. Turbo) | 1 via img2img (``from_pipe``) |
| ``flux`` | FluxPipeline (FLUX.1 dev / schnell) | 1 via img2img (``from_pipe``) |
| ``flux-kontext`` | FluxKontextPipeline | 1 edit image |
| ``flux2`` | Flux2Pipeline | up to 10 |
| ``flux2-klein`` | Flux2KleinPipeline | up to 10 |
| ``flux2-klein-kv`` | Flux2KleinKVPipeline (klein's KV variant) | up to 10, their keys/values cached after step 1 |
| ``qwen-image`` | QwenImagePipeline | 1 via img2img (``from_pipe``) |
| ``qwen-image-edit`` | QwenImageEditPipeline | 1 edit image |
| ``qwen-image-edit-plus`` | QwenImageEditPlusPipeline (2509, 2511) | up to 3 |
| ``qwen-image-layered`` | QwenImageLayeredPipeline | 1 input image, decomposed into RGBA layers |
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ReferenceMode = Literal["img2img", "single", "list"]


class ModelSetupError(RuntimeError):
    """A configured model cannot be served (missing directory, unknown pipeline, missing extra)."""


@dataclass(frozen=True)
class Family:
    """How one pipeline family is driven."""

    name: str
    #: ``model_index.json`` ``_class_name`` values that belong to the family
    classes: tuple[str, ...]
    #: how references reach the pipeline: img2img init image, one edit image, or a list
    reference_mode: ReferenceMode
    max_references: int
    steps: int
    guidance_scale: float
    #: the call argument that carries the request's guidance (Qwen-Image uses true CFG; "" = the pipeline has none)
    guidance_arg: str = "guidance_scale"
    native_pixels: int = 1024 * 1024
    #: the pipeline takes a list of prompts (and generators) in one call
    batchable: bool = True
    #: smallest reference side the pipeline accepts (FLUX.2 refuses images under 64 px)
    min_reference_side: int = 0
    #: pass a blank negative prompt so that true CFG runs (Qwen-Image's documented usage)
    negative_prompt: bool = False
    #: the pipeline decomposes its input image into RGBA layers (``layer_decomposition`` requests only)
    layered: bool = False
    #: an AutoencoderTiny (taesd, taesdxl, taef1) can stand in for the VAE (``vae = "tiny"``)
    tiny_vae: bool = False
    #: the pipeline cannot draw from a prompt alone (it needs an input image)
    needs_image: bool = False
    description: str = ""


FAMILIES: tuple[Family, ...] = (
    Family(
        "sd",
        ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
        "img2img",
        1,
        steps=30,
        guidance_scale=7.5,
        native_pixels=512 * 512,
        tiny_vae=True,
        description="Stable Diffusion 1.x/2.x",
    ),
    Family(
        "sdxl",
        ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
        "img2img",
        1,
        steps=30,
        guidance_scale=5.0,
        tiny_vae=True,
        description="Stable Diffusion XL",
    ),
    Family(
        "flux",
        ("FluxPipeline", "FluxImg2ImgPipeline"),
        "img2img",
        1,
        steps=28,
        guidance_scale=3.5,
        tiny_vae=True,
        description="FLUX.1",
    ),
    Family(
        "flux-kontext",
        ("FluxKontextPipeline",),
        "single",
        1,
        steps=28,
        guidance_scale=2.5,
        batchable=False,
        tiny_vae=True,
        description="FLUX.1 Kontext",
    ),
    Family(
        "flux2",
        ("Flux2Pipeline",),
        "list",
        10,
        steps=50,
        guidance_scale=4.0,
        min_reference_side=64,
        description="FLUX.2",
    ),
    Family(
        "flux2-klein",
        ("Flux2KleinPipeline",),
        "list",
        10,
        steps=50,
        guidance_scale=4.0,
        min_reference_side=64,
        description="FLUX.2 [klein]",
    ),
    Family(
        "flux2-klein-kv",
        ("Flux2KleinKVPipeline",),
        "list",
        10,
        steps=4,
        guidance_scale=1.0,
        guidance_arg="",  # step-distilled: the KV pipeline takes no guidance
        min_reference_side=64,
        description="FLUX.2 [klein] KV",
    ),
    Family(
        "qwen-image",
        ("QwenImagePipeline", "QwenImageImg2ImgPipeline"),
        "img2img",
        1,
        steps=50,
        guidance_scale=4.0,
        guidance_arg="true_cfg_scale",
        negative_prompt=True,
        description="Qwen-Image",
    ),
    Family(
        "qwen-image-edit",
        ("QwenImageEditPipeline",),
        "single",
        1,
        steps=50,
        guidance_scale=4.0,
        guidance_arg="true_cfg_scale",
        negative_prompt=True,
        batchable=False,
        needs_image=True,
        description="Qwen-Image-Edit",
    ),
    Family(
        "qwen-image-edit-plus",
        ("QwenImageEditPlusPipeline",),
        "list",
        3,
        steps=40,
        guidance_scale=4.0,
        guidance_arg="true_cfg_scale",
        negative_prompt=True,
        batchable=False,
        needs_image=True,
        description="Qwen-Image-Edit Plus (2509/2511)",
    ),
    Family(
        "qwen-image-layered",
        ("QwenImageLayeredPipeline",),
        "single",
        1,
        steps=50,
        guidance_scale=4.0,
        guidance_arg="true_cfg_scale",
        native_pixels=640 * 640,  # the pipeline's resolution bucket: 640 (or 1024 for >= 1024² native pixels)
        batchable=False,
        negative_prompt=True,
        layered=True,
        needs_image=True,
        description="Qwen-Image-Layered",
    ),
)

_BY_CLASS = {cls: family for family in FAMILIES for cls in family.classes}
#: a distilled klein checkpoint named like FLUX.2-klein-9b-kv is its KV variant
_KV_NAME = re.compile(r"klein[^ /]*[-_]kv\b")


@dataclass(frozen=True)
class ModelInfo:
    """What detection found in a model directory, with the family's defaults resolved."""

    family: Family
    pipeline_class: str
    steps: int
    guidance_scale: float
    native_pixels: int
    #: FLUX.2 klein's step-distilled checkpoints; also FLUX.1 schnell and SD/SDXL Turbo
    distilled: bool = False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelSetupError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def supported_classes() -> list[str]:
    return sorted(_BY_CLASS)


def detect(model_dir: Path, source: str = "") -> ModelInfo:
    """Detect the family of the diffusers model in ``model_dir`` and its defaults.

    ``source`` (the configured name) is only used for the one thing no config says: whether an SD/SDXL
    checkpoint is a Turbo (adversarially distilled) one, from "turbo" in its name.
    """
    index_file = model_dir / "model_index.json"
    if not index_file.is_file():
        raise ModelSetupError(f"{model_dir} is not a diffusers model directory: it has no model_index.json")
    index = _read_json(index_file)
    class_name = str(index.get("_class_name", ""))
    family = _BY_CLASS.get(class_name)
    if family is None:
        raise ModelSetupError(
            f"{model_dir}: unsupported pipeline class {class_name or '(none)'!r}; the diffusers engine serves "
            f"{', '.join(supported_classes())}"
        )
    steps, guidance, pixels, distilled = family.steps, family.guidance_scale, family.native_pixels, False
    if family.name in {"sd", "sdxl"}:
        # the UNet's latent sample size times the VAE factor is the resolution the model was trained at
        unet = _read_json(model_dir / "unet" / "config.json")
        vae = _read_json(model_dir / "vae" / "config.json")
        sample = unet.get("sample_size")
        blocks = vae.get("block_out_channels")
        if isinstance(sample, int) and isinstance(blocks, list) and blocks:
            side = sample * 2 ** (len(blocks) - 1)
            pixels = side * side
        if "turbo" in f"{source} {model_dir.name}".lower():
            steps, guidance, distilled = 4, 0.0, True
    elif family.name == "flux":
        transformer = _read_json(model_dir / "transformer" / "config.json")
        if transformer.get("guidance_embeds") is False:  # FLUX.1 schnell: timestep-distilled, no guidance
            steps, guidance, distilled = 4, 0.0, True
    elif family.name == "flux2-klein" and index.get("is_distilled") is True:
        steps, guidance, distilled = 4, 1.0, True
        if _KV_NAME.search(f"{source} {model_dir.name}".lower()):
            # klein's KV checkpoints: reference keys/values computed once per call (Flux2KleinKVPipeline)
            family, class_name = _BY_CLASS["Flux2KleinKVPipeline"], "Flux2KleinKVPipeline"
    elif family.name == "flux2-klein-kv":
        distilled = True
    return ModelInfo(family, class_name, steps, guidance, pixels, distilled)


def native_size(width: int, height: int, pixels: int, multiple: int) -> tuple[int, int]:
    """The generation size: ``pixels`` in total with the aspect of ``width`` x ``height``, sides rounded
    to ``multiple`` (at least one multiple each)."""
    if width <= 0 or height <= 0 or pixels <= 0 or multiple <= 0:
        raise ValueError(f"bad size request {width}x{height} at {pixels} pixels, multiple {multiple}")
    ratio = width / height
    w = math.sqrt(pixels * ratio)
    h = math.sqrt(pixels / ratio)
    return max(multiple, round(w / multiple) * multiple), max(multiple, round(h / multiple) * multiple)


def group_references(user: list[Any], outputs: list[Any], limit: int) -> list[Any]:
    """References for the next image of a group: the request's own first, then earlier outputs.

    When they do not all fit in ``limit``, the first output (the group's anchor) and the most recent ones
    are kept.
    """
    room = limit - len(user)
    if room <= 0 or not outputs:
        return list(user[:limit])
    if len(outputs) <= room:
        return [*user, *outputs]
    if room == 1:
        return [*user, outputs[0]]
    return [*user, outputs[0], *outputs[len(outputs) - (room - 1) :]]
