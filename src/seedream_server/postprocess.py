"""Pure image functions for the "finish" step: resize, visible watermark, encoding.

This module owns the pixels of a generated image between the engine and storage
(SPEC §3 "output is exactly W×H", SPEC §8 "Watermark and provenance"):

* :func:`resize_to` — exact output size, cover-crop centred, never distorted (RGBA kept for layers);
  :func:`resize_box` maps a box in the source to the resized image.
* :func:`add_watermark` — the visible "AI生成" mark, bottom-right, scaled to the image and legible
  on light and dark content, drawn with the OFL-licensed CJK font subset shipped in
  ``seedream_server/assets/fonts/`` (see ``OFL.txt`` there and ``scripts/build_font.py``).
* :func:`encode_image` — JPEG, PNG or WebP bytes carrying the implicit AIGC label that
  :mod:`.provenance` builds. Encoding is deterministic: same pixels and same provenance give the
  same bytes.

:class:`Provenance` and :func:`read_provenance` live in :mod:`.provenance`; they are re-exported
here for the callers that still import them from this module.

Nothing here does I/O beyond reading the packaged font, and nothing imports the rest of the package
but :mod:`.provenance`.
"""

from __future__ import annotations

import functools
import io
import math
from importlib import resources
from typing import Final

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .provenance import Labels, Provenance, read_provenance

__all__ = [
    "DEFAULT_FONT_RESOURCE",
    "DEFAULT_WATERMARK_TEXT",
    "Provenance",
    "add_watermark",
    "encode_image",
    "read_provenance",
    "resize_box",
    "resize_to",
]

#: Text drawn by :func:`add_watermark` when none is given.
DEFAULT_WATERMARK_TEXT: Final = "AI生成"
#: The shipped font, relative to the ``seedream_server`` package.
DEFAULT_FONT_RESOURCE: Final = "assets/fonts/NotoSansCJKsc-Bold-subset.otf"
_PACKAGE: Final = "seedream_server"

#: Output formats :func:`encode_image` accepts (``jpg`` is an alias of ``jpeg``).
_FORMATS: Final = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
_QUALITY_MIN: Final = 1
_QUALITY_MAX: Final = 100
_PNG_COMPRESS_LEVEL: Final = 6  # zlib level: Pillow's default, a balance of size and speed
_WEBP_METHOD: Final = 4  # libwebp effort 0 (fast) .. 6 (small); 4 is its default

# --- resize -----------------------------------------------------------------------------------


# Not the references package's _to_rgb: that one also rescales 16-bit and float decodes, and flattens fewer modes.
def _to_rgb(image: Image.Image) -> Image.Image:
    """Return ``image`` as RGB; transparent areas are flattened onto white."""
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    return image.convert("RGB")


def _cover_box(src_w: int, src_h: int, width: int, height: int) -> tuple[float, float, float, float]:
    """The largest centred box of a ``src_w`` x ``src_h`` image with the aspect of ``width`` x ``height``:
    left, top, box width, box height."""
    if src_w * height > width * src_h:  # source is wider: crop left and right
        box_w, box_h = src_h * width / height, float(src_h)
    else:  # source is taller (or same aspect): crop top and bottom
        box_w, box_h = float(src_w), src_w * height / width
    return (src_w - box_w) / 2, (src_h - box_h) / 2, box_w, box_h


def _to_rgba(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGBA" else image.convert("RGBA")


def resize_to(image: Image.Image, width: int, height: int, *, keep_alpha: bool = False) -> Image.Image:
    """Return an RGB image (RGBA with ``keep_alpha``) of exactly ``width`` x ``height``.

    When the aspect ratio differs, the image is scaled to cover the target and centre-cropped
    (never stretched). The crop and the scale are one resampling pass: LANCZOS when downscaling,
    BICUBIC when upscaling (Pillow resamples RGBA with premultiplied alpha, so transparent pixels do
    not bleed colour). The same object is returned when it is already in the mode and the right size.

    Raises:
        ValueError: ``width`` or ``height`` is not positive.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    src_w, src_h = image.size
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"source image is empty ({src_w}x{src_h})")
    converted = _to_rgba(image) if keep_alpha else _to_rgb(image)
    if (src_w, src_h) == (width, height):
        return converted
    left, top, box_w, box_h = _cover_box(src_w, src_h, width, height)
    downscaling = width < box_w or height < box_h
    resample = Image.Resampling.LANCZOS if downscaling else Image.Resampling.BICUBIC
    return converted.resize((width, height), resample, box=(left, top, left + box_w, top + box_h))


def resize_box(
    box: tuple[int, int, int, int], source: tuple[int, int], width: int, height: int
) -> tuple[int, int, int, int]:
    """Where ``box`` (x0, y0, x1, y1 in pixels of a ``source``-sized image) lands after
    :func:`resize_to` to ``width`` x ``height``: scaled, shifted by the crop, rounded outwards and clamped
    to the target (a box wholly cropped away becomes empty, x0 == x1 or y0 == y1)."""
    src_w, src_h = source
    if (src_w, src_h) == (width, height):
        x0, y0, x1, y1 = box
    else:
        left, top, box_w, box_h = _cover_box(src_w, src_h, width, height)
        sx, sy = width / box_w, height / box_h
        x0, x1 = math.floor((box[0] - left) * sx), math.ceil((box[2] - left) * sx)
        y0, y1 = math.floor((box[1] - top) * sy), math.ceil((box[3] - top) * sy)
    x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
    y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
    return x0, y0, max(x0, x1), max(y0, y1)


# --- watermark --------------------------------------------------------------------------------

#: Text height as a fraction of the shorter image side, and the smallest font size in pixels.
_WATERMARK_SCALE: Final = 0.035
_WATERMARK_MIN_PX: Final = 12
# The mark's geometry, as fractions of the font size in pixels (each at least 1 px).
_STROKE_RATIO: Final = 0.08  # outline width
_MARGIN_RATIO: Final = 0.6  # gap between the text and the image edges
_MIN_MARGIN_PX: Final = 4
_SHADOW_OFFSET_RATIO: Final = 0.05  # shadow shift down and right
_BLUR_RATIO: Final = 0.06  # shadow blur radius
_FIT_ATTEMPTS: Final = 4  # font shrinks tried before a too-long text is left to overflow
_TEXT_FILL: Final = (255, 255, 255, 240)
_STROKE_FILL: Final = (0, 0, 0, 170)
_SHADOW_FILL: Final = (0, 0, 0, 110)
_TRANSPARENT: Final = (0, 0, 0, 0)


@functools.lru_cache(maxsize=1)
def _default_font_bytes() -> bytes:
    """The shipped font file's bytes (read once; works from a wheel or a zip too)."""
    return resources.files(_PACKAGE).joinpath(DEFAULT_FONT_RESOURCE).read_bytes()


@functools.lru_cache(maxsize=64)
def _load_font(font_path: str | None, size: int) -> ImageFont.FreeTypeFont:
    """Load (and cache) the watermark font at ``size`` px; ``None`` means the shipped font."""
    if font_path is None:
        return ImageFont.truetype(io.BytesIO(_default_font_bytes()), size)
    return ImageFont.truetype(font_path, size)


def _stroke_width(size: int) -> int:
    return max(1, round(size * _STROKE_RATIO))


def _fit_font(text: str, font_path: str | None, size: int, max_width: int) -> ImageFont.FreeTypeFont:
    """The font at ``size``, shrunk (not below the minimum) until ``text`` fits ``max_width``."""
    font = _load_font(font_path, size)
    for _ in range(_FIT_ATTEMPTS):
        left, _top, right, _bottom = font.getbbox(text, stroke_width=_stroke_width(size))
        text_w = right - left
        if text_w <= max_width or size <= _WATERMARK_MIN_PX:
            break
        size = max(_WATERMARK_MIN_PX, int(size * max_width / text_w))
        font = _load_font(font_path, size)
    return font


def _render_mark(text: str, font: ImageFont.FreeTypeFont) -> tuple[Image.Image, int]:
    """The mark as an RGBA layer (glyphs over their blurred shadow) and the padding around its text box."""
    size = int(font.size)
    stroke = _stroke_width(size)
    shadow_offset = max(1, round(size * _SHADOW_OFFSET_RATIO))
    blur = max(1.0, size * _BLUR_RATIO)
    pad = stroke * 2 + shadow_offset + int(blur * 2) + 1  # room for outline, shadow and blur

    bbox = font.getbbox(text, stroke_width=stroke)
    left, top = math.floor(bbox[0]), math.floor(bbox[1])
    right, bottom = math.ceil(bbox[2]), math.ceil(bbox[3])
    layer_size = (right - left + 2 * pad, bottom - top + 2 * pad)
    origin = (pad - left, pad - top)  # where to draw so the bbox starts at (pad, pad)

    shadow = Image.new("RGBA", layer_size, _TRANSPARENT)
    ImageDraw.Draw(shadow).text(
        (origin[0] + shadow_offset, origin[1] + shadow_offset),
        text,
        font=font,
        fill=_SHADOW_FILL,
        stroke_width=stroke * 2,
        stroke_fill=_SHADOW_FILL,
    )
    layer = shadow.filter(ImageFilter.GaussianBlur(blur))
    glyphs = Image.new("RGBA", layer_size, _TRANSPARENT)
    ImageDraw.Draw(glyphs).text(origin, text, font=font, fill=_TEXT_FILL, stroke_width=stroke, stroke_fill=_STROKE_FILL)
    layer.alpha_composite(glyphs)
    return layer, pad


def add_watermark(
    image: Image.Image, text: str = DEFAULT_WATERMARK_TEXT, *, font_path: str | None = None
) -> Image.Image:
    """Return a copy of ``image`` with ``text`` drawn in its bottom-right corner.

    The text is about 3.5 % of the shorter side tall (at least 12 px), set in from the edges by a
    margin, white with a dark translucent outline and soft shadow so it reads on light and dark
    content alike. Only the corner region is composited, so this stays cheap at 4096x4096.
    The default font is the CJK subset shipped with the package (it covers ASCII, the built-in
    watermark texts and common characters); pass ``font_path`` for texts in other scripts.
    Images that are neither RGB nor RGBA are converted to RGB; an empty ``text`` only copies.
    """
    out = image.copy() if image.mode in ("RGB", "RGBA") else _to_rgb(image)
    text = text.strip()
    if not text:
        return out
    img_w, img_h = out.size
    size = max(_WATERMARK_MIN_PX, round(min(img_w, img_h) * _WATERMARK_SCALE))
    margin = max(_MIN_MARGIN_PX, round(size * _MARGIN_RATIO))
    font = _fit_font(text, font_path, size, max(1, img_w - 2 * margin))
    layer, pad = _render_mark(text, font)
    layer_w, layer_h = layer.size
    # The layer's origin in image coordinates: the text box ends `margin` px from the corner.
    x0 = img_w - margin - (layer_w - pad)
    y0 = img_h - margin - (layer_h - pad)

    # Clip the layer to the image (tiny images) and composite only that region.
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(img_w, x0 + layer_w), min(img_h, y0 + layer_h)
    if cx0 >= cx1 or cy0 >= cy1:
        return out
    box = (cx0, cy0, cx1, cy1)
    region = out.crop(box).convert("RGBA")
    region.alpha_composite(layer.crop((cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0)))
    out.paste(region if out.mode == "RGBA" else region.convert(out.mode), box)
    return out


# --- encoding ---------------------------------------------------------------------------------


def encode_image(
    image: Image.Image, *, provenance: Provenance, output_format: str = "jpeg", quality: int = 90
) -> bytes:
    """Encode ``image`` as JPEG (default), PNG or WebP with implicit AIGC provenance metadata.

    Every output carries the XMP packet (JPEG: APP1; PNG: ``iTXt`` ``XML:com.adobe.xmp``; WebP:
    ``XMP`` chunk) and EXIF (ImageDescription, Software, Artist, DateTime, UserComment) with the
    same label, as :class:`~.provenance.Labels` builds them. Any metadata the input image carried
    (ICC profile, old EXIF, text chunks) is dropped, so the result depends only on the pixels,
    ``provenance`` and the arguments. ``quality`` (1..100) applies to JPEG and WebP. JPEG output is
    RGB; transparency is flattened onto white.

    Raises:
        ValueError: unknown ``output_format`` or ``quality`` out of range.
    """
    fmt = _FORMATS.get(output_format.lower().strip())
    if fmt is None:
        raise ValueError(f"unsupported output_format {output_format!r}; expected jpeg, png or webp")
    if not _QUALITY_MIN <= quality <= _QUALITY_MAX:
        raise ValueError(f"quality must be within {_QUALITY_MIN}..{_QUALITY_MAX}, got {quality}")

    im = _to_rgb(image) if fmt == "JPEG" or image.mode not in ("RGB", "RGBA") else image
    if im.info:  # never let a source's metadata leak into (or perturb) the output
        im = im.copy()
        im.info.clear()

    labels = Labels.of(provenance)
    codecs: dict[str, dict[str, object]] = {
        "JPEG": {"quality": quality, "optimize": True},
        "PNG": {"compress_level": _PNG_COMPRESS_LEVEL},
        "WEBP": {"quality": quality, "method": _WEBP_METHOD},
    }
    buf = io.BytesIO()
    im.save(buf, fmt, **codecs[fmt], **labels.save_args(fmt))
    return labels.finish(fmt, buf.getvalue())
