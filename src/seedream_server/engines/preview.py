"""The preview engine: deterministic, CPU-only, no weights. Not a real model, and it says so in the picture.

Each image is a smooth colour field computed at low resolution and scaled up (fast at 4K), overlaid
with shapes and a label. What drives it:

* the group (base prompt + request seed) picks the palette and the layout, so a group is a visibly
  related set;
* each image's own prompt, seed and index shift the hue, light and shapes, so images differ;
* every reference image appears as a thumbnail and tints the field, so the output depends on each.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .base import Engine, EngineCapabilities, ImageJob, ImageResult, ImageTask

_FIELD = 96  # side of the low-resolution field before upscaling
_THUMB_FRACTION = 8  # reference thumbnails are 1/8 of the short side
#: references are shown as thumbnails (at most 6240/8 px at 4K): decoding them larger than 1 MP is waste
PREVIEW_REFERENCE_PIXELS = 1024 * 1024


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def _field(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth scalar field in [0, 1] at low resolution with the image's aspect."""
    if width >= height:
        fw, fh = _FIELD, max(4, round(_FIELD * height / width))
    else:
        fw, fh = max(4, round(_FIELD * width / height)), _FIELD
    y, x = np.mgrid[0:fh, 0:fw].astype(np.float32)
    x /= fw
    y /= fh
    total = np.zeros((fh, fw), np.float32)
    for _ in range(6):
        fx, fy = rng.uniform(-6, 6, 2)
        phase = rng.uniform(0, 2 * np.pi)
        total += np.sin(2 * np.pi * (fx * x + fy * y) / 2 + phase).astype(np.float32)
    total -= total.min()
    span = float(total.max()) or 1.0
    return np.asarray(total / span, dtype=np.float32)


def _palette(rng: np.random.Generator, tint: np.ndarray | None) -> np.ndarray:
    colours = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    if tint is not None:
        colours[1] = 0.35 * colours[1] + 0.65 * tint
    return colours


def _reference_tint(references: tuple[Image.Image, ...]) -> np.ndarray | None:
    if not references:
        return None
    means = [np.asarray(ref.convert("RGB").resize((8, 8)), np.float32).reshape(-1, 3).mean(0) for ref in references]
    return np.asarray(np.mean(means, axis=0), dtype=np.float32)


def render(job: ImageJob, task: ImageTask) -> Image.Image:
    """Render one preview image of job.width x job.height for ``task`` (pure, deterministic)."""
    width, height = job.width, job.height
    count = len(job.tasks)
    group_seed = job.tasks[0].seed if job.group else task.seed
    base = job.base_prompt or task.prompt
    group_rng = _rng("group", base, group_seed, job.width, job.height)
    image_rng = _rng("image", task.prompt, task.seed, task.index)

    # 1. colour field: palette and layout shared by the group, variation per image
    palette = _palette(group_rng, _reference_tint(job.references))
    shared = _field(group_rng, width, height)
    own = _field(image_rng, width, height)
    mix = 0.8 * shared + 0.2 * own if job.group else 0.45 * shared + 0.55 * own
    light = 0.55 + 0.45 * (1 - task.index / max(count - 1, 1)) if job.group and count > 1 else 1.0
    hue_shift = float(image_rng.uniform(-25, 25))
    t = mix[..., None]
    rgb = (1 - t) ** 2 * palette[0] + 2 * t * (1 - t) * palette[1] + t**2 * palette[2]
    rgb = np.clip((rgb + hue_shift * np.array([1, -0.5, -0.5], np.float32)) * light, 0, 255)
    image = Image.fromarray(rgb.astype(np.uint8), "RGB").resize((width, height), Image.Resampling.BICUBIC)

    # 2. shapes: positions from the group, sizes and colours from the image
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    for _ in range(5):
        cx, cy = group_rng.uniform(0.1, 0.9, 2)
        radius = short * float(image_rng.uniform(0.04, 0.14))
        colour = tuple(int(c) for c in image_rng.integers(0, 256, 3))
        box = (cx * width - radius, cy * height - radius, cx * width + radius, cy * height + radius)
        draw.ellipse(box, fill=colour, outline=(255, 255, 255), width=max(1, short // 400))

    # 3. references as thumbnails along the top edge, one per reference
    if job.references:
        thumb = max(16, short // _THUMB_FRACTION)
        x = margin = max(4, short // 60)
        for ref in job.references:
            tile = ref.convert("RGB").copy()
            tile.thumbnail((thumb, thumb))
            image.paste(tile, (x, margin + short // 12))
            x += tile.width + margin
            if x + thumb > width:
                break

    # 4. label: this is a preview, not a real model
    size = max(10, short // 40)
    font = ImageFont.load_default(size=size)
    label = f"PREVIEW ENGINE - not a real model | seed {task.seed} | image {task.index + 1}/{count}"
    digest = hashlib.sha256(task.prompt.encode()).hexdigest()[:12]
    pad = max(2, size // 3)
    draw.rectangle((0, 0, width, size * 2 + pad * 3), fill=(0, 0, 0))
    draw.text((pad, pad), label, fill=(255, 255, 255), font=font)
    draw.text((pad, size + pad * 2), f"prompt #{digest} ({len(task.prompt)} chars)", fill=(200, 200, 200), font=font)
    return image


class PreviewEngine(Engine):
    """Serves any model name with the preview renderer."""

    kind = "preview"

    def __init__(self, capabilities: EngineCapabilities | None = None) -> None:
        self._capabilities = capabilities or EngineCapabilities(
            reference_pixels=PREVIEW_REFERENCE_PIXELS,
            description="Built-in preview engine: deterministic placeholder images, not a real model.",
        )

    @property
    def capabilities(self) -> EngineCapabilities:
        return self._capabilities

    async def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        for task in job.tasks:
            image = await asyncio.to_thread(render, job, task)
            yield ImageResult(index=task.index, image=image)
