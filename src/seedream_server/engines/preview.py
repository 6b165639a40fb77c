"""The preview engine: deterministic, CPU-only, no weights. Not a real model, and it says so in the picture.

Each image is a smooth colour field computed at low resolution and scaled up (fast at 4K), overlaid
with shapes and a label. What drives it:

* the group (base prompt + request seed) picks the palette and the layout, so a group is a visibly
  related set;
* each image's own prompt, seed and index shift the hue, light and shapes, so images differ;
* every reference image appears as a thumbnail and tints the field, so the output depends on each;
* the label strip says it is a preview and prints the image's own prompt (its first line, shortened).

A layer decomposition (``ImageJob.layer_decomposition``) yields the base image and placeholder layers:
the first reference (or the preview picture) cut into colour regions with alpha (:func:`decompose`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
from collections.abc import AsyncIterator
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .base import Engine, EngineCapabilities, ImageJob, ImageResult, ImageTask, Layer

_FIELD = 96  # side of the low-resolution field before upscaling
_THUMB_FRACTION = 8  # reference thumbnails are 1/8 of the short side
#: references are shown as thumbnails (at most 6240/8 px at 4K): decoding them larger than 1 MP is waste
PREVIEW_REFERENCE_PIXELS = 1024 * 1024
_LABEL_FONT = "assets/fonts/NotoSansCJKsc-Bold-subset.otf"
_ELLIPSIS = "..."
LAYER_REGIONS = 4  # layers of a placeholder decomposition (fewer when the base has fewer colours)


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

    # 4. label: this is a preview, not a real model; and what this image was asked for
    first = f"PREVIEW ENGINE - not a real model | seed {task.seed} | image {task.index + 1}/{count}"
    _label(image, first, task.prompt)
    return image


def _label(image: Image.Image, first: str, prompt: str) -> None:
    """The black strip along the top: ``first`` and the prompt's first line, shortened to fit."""
    width, short = image.width, min(image.size)
    size = max(10, short // 40)
    font = label_font(size)
    pad = max(2, size // 3)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, size * 2 + pad * 3), fill=(0, 0, 0))
    draw.text((pad, pad), first, fill=(255, 255, 255), font=font)
    draw.text((pad, size + pad * 2), fit_line(prompt, font, width - 2 * pad), fill=(200, 200, 200), font=font)


def decompose(job: ImageJob) -> list[tuple[Image.Image, Layer]]:
    """Placeholder layer decomposition (pure, deterministic): the base image (the first reference, cover-
    cropped to the canvas, or the preview picture when there is none) and up to :data:`LAYER_REGIONS`
    transparent layers of the canvas size, one per colour cluster of the base (median cut), largest first,
    each opaque where the base has that colour. Together they compose back to the base."""
    width, height = job.width, job.height
    task = job.tasks[0]
    if job.references:
        base = ImageOps.fit(job.references[0].convert("RGB"), (width, height), Image.Resampling.LANCZOS)
        source = "the reference image"
    else:
        base = render(job, task)
        source = "the preview picture"
    wanted = min(LAYER_REGIONS, len(job.tasks) - 1)
    title = f"PREVIEW ENGINE - not a real model | layer decomposition placeholder: {wanted} colour regions"
    _label(base, title, task.prompt)
    note = "preview engine placeholder: colour clusters, not a real decomposition"
    items = [(base.convert("RGBA"), Layer(0, (0, 0, width, height), "base", f"{source} ({note})"))]
    if wanted <= 0:
        return items
    small = base.copy()
    small.thumbnail((128, 128))
    clusters = small.quantize(colors=wanted, method=Image.Quantize.MEDIANCUT)
    palette = clusters.getpalette() or []
    counts = np.bincount(np.asarray(clusters).ravel(), minlength=wanted)
    order = sorted((k for k in range(len(counts)) if counts[k]), key=lambda k: (-counts[k], k))
    labels = np.asarray(clusters.resize((width, height), Image.Resampling.NEAREST))
    for z, k in enumerate(order, 1):
        mask = Image.fromarray(np.where(labels == k, 255, 0).astype(np.uint8), "L")
        layer = base.convert("RGBA")
        layer.putalpha(mask)
        colour = "#" + "".join(f"{c:02x}" for c in palette[3 * k : 3 * k + 3])
        share = round(100 * float(counts[k]) / float(counts.sum()))
        description = f"the pixels of {source} nearest {colour}, about {share}% of the canvas ({note})"
        box = mask.getbbox() or (0, 0, 0, 0)
        items.append((layer, Layer(z, box, f"region {z} of {len(order)} (placeholder)", description)))
    return items


@functools.lru_cache(maxsize=16)
def label_font(size: int) -> ImageFont.FreeTypeFont:
    """The package's CJK font subset (the watermark's): ASCII and common Chinese characters; characters it
    lacks show as boxes. Always this file, so the pictures are the same on every machine."""
    data = resources.files("seedream_server").joinpath(_LABEL_FONT).read_bytes()
    return ImageFont.truetype(io.BytesIO(data), size)


def fit_line(prompt: str, font: ImageFont.FreeTypeFont, room: float) -> str:
    """The prompt's first non-blank line, shortened with an ellipsis to fit ``room`` pixels in ``font``
    (a mark when the prompt has more lines)."""
    lines = [line.strip() for line in prompt.strip().splitlines() if line.strip()] or [""]
    text = " ".join(lines[0].split())
    more = len(lines) > 1
    if not more and font.getlength(text) <= room:
        return text
    low, high = 0, len(text)  # the longest prefix that fits with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle].rstrip() + _ELLIPSIS) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + _ELLIPSIS


class PreviewEngine(Engine):
    """Serves any model name with the preview renderer."""

    kind = "preview"

    def __init__(self, capabilities: EngineCapabilities | None = None) -> None:
        self._capabilities = capabilities or EngineCapabilities(
            reference_pixels=PREVIEW_REFERENCE_PIXELS,
            layer_decomposition=True,
            description="Built-in preview engine: deterministic placeholder images, not a real model.",
        )

    @property
    def capabilities(self) -> EngineCapabilities:
        return self._capabilities

    async def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        if job.layer_decomposition:  # one base image, then its layers (see decompose)
            items = await asyncio.to_thread(decompose, job)
            for index, (image, layer) in enumerate(items):
                yield ImageResult(index=index, image=image, layer=layer)
            return
        for task in job.tasks:
            image = await asyncio.to_thread(render, job, task)
            yield ImageResult(index=task.index, image=image)
