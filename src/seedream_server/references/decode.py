"""Decoding a checked reference to RGB pixels, strictly and downscaled: the work a decoder process does.

:func:`decode_reference` runs in a :class:`~seedream_server.references.ReferenceDecoder` worker process
(or a thread, for :func:`~seedream_server.references.load_references`). It refuses data that does not fill
the image its header announces (Pillow fills the rest with grey or black and reports nothing: for PNG
the zlib stream must inflate to every row; for JPEG :func:`~.header.check_jpeg_structure` bounds it),
decodes JPEG small in the first place with Pillow's ``draft`` (DCT scaling by 1/2, 1/4 or 1/8), then
applies EXIF orientation, takes the first frame of animations, flattens alpha on white, converts to RGB
and resizes to :func:`target_size`.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from typing import Final

from PIL import Image, ImageOps

from .errors import ReferenceRejected
from .header import PIL_NAMES
from .policy import FetchedReference, ImageFormat

__all__ = ["check_png_data", "decode_reference", "decoded_pixels", "target_size"]

_PNG_CHANNELS: Final[dict[int, int]] = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
# Adam7 passes: (x start, y start, x step, y step)
_ADAM7: Final = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_INFLATE_STEP: Final = 1 << 20


def target_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The size a ``width`` x ``height`` image is decoded to: itself, or scaled (aspect kept) to fit
    ``max_pixels``. Symmetric: swapping the sides swaps the result, so EXIF rotation does not matter."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w, h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    while w * h > max_pixels:  # floating point may round a side up to the next integer
        w, h = (w - 1, h) if w >= h else (w, h - 1)
    return w, h


def decoded_pixels(ref: FetchedReference, max_pixels: int | None) -> int:
    """Pixels the decoded (downscaled) image of ``ref`` will hold, exactly as decoding sizes it."""
    width, height = target_size(ref.width, ref.height, max_pixels)
    return width * height


def _png_raw_size(width: int, height: int, depth: int, colour: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines a PNG of this header must inflate to."""
    bits = depth * _PNG_CHANNELS[colour]
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        pass_w, pass_h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_w > 0 and pass_h > 0:
            total += pass_h * (1 + -(-pass_w * bits // 8))
    return total


def check_png_data(data: bytes) -> None:
    """Refuse a PNG whose image data does not inflate to every row its header announces.

    Pillow stops at the end of the zlib stream and leaves the remaining rows black without a word, so a
    6000x6000 header over 16 rows of data would cost a full decode. Inflates in steps (memory stays
    small) and stops as soon as every row is accounted for.
    """
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ReferenceRejected("could not decode the png image (no header: truncated or corrupt)")
    width, height, depth, colour, _compression, _filter, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if colour not in _PNG_CHANNELS:
        raise ReferenceRejected("could not decode the png image (unknown colour type)")
    needed = _png_raw_size(width, height, depth, colour, interlace == 1)
    inflater = zlib.decompressobj()
    produced, pos = 0, 8
    while pos + 8 <= len(data) and produced < needed:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            pending = data[pos + 8 : pos + 8 + length]
            while pending and produced < needed:
                try:
                    produced += len(inflater.decompress(pending, _INFLATE_STEP))
                except zlib.error as exc:
                    raise ReferenceRejected("could not decode the png image (corrupt image data)") from exc
                pending = inflater.unconsumed_tail
        elif kind == b"IEND":
            break
        pos += 12 + length
    if produced < needed:
        raise ReferenceRejected(
            f"png image data ends after {produced} of {needed} bytes: it does not fill its "
            f"{width}x{height} header (truncated or corrupt)"
        )


# Not postprocess._to_rgb: decoded uploads may be 16-bit or float (I;16, I, F), scaled to 8 bits here, and
# a grey image's "transparency" key is dropped, not flattened; engine outputs need neither.
def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        return background.convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        image = image.convert("I").point(lambda v: v * (1 / 256))
    if image.mode in ("I", "F"):
        image = image.convert("L")
    return image.convert("RGB")


def _decode(data: bytes, fmt: ImageFormat, max_pixels: int | None) -> Image.Image:
    with Image.open(io.BytesIO(data), formats=[PIL_NAMES[fmt]]) as opened:
        if fmt == "jpeg":  # DCT scaling: decode at 1/2, 1/4 or 1/8 when that still covers the target
            opened.draft(opened.mode, target_size(*opened.size, max_pixels))
        opened.seek(0)  # first frame of gif / animated webp / multi-page tiff
        opened.load()
        image = ImageOps.exif_transpose(opened) or opened
        rgb = _to_rgb(image)
        if rgb is opened:
            rgb = opened.copy()
    size = target_size(rgb.width, rgb.height, max_pixels)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)  # halves large downscales
    return rgb


def decode_reference(data: bytes, fmt: ImageFormat, max_pixels: int | None) -> Image.Image:
    """Decode checked ``data`` (see :func:`~.header.inspect_image`) to RGB, at most ``max_pixels`` large.

    Raises :class:`ReferenceRejected` (the reason without the index) for anything Pillow cannot decode
    and for data that does not fill its image. Meant for a worker process: it may take long and use
    memory for the full-size image; the caller bounds both.
    """
    try:
        if fmt == "png":
            check_png_data(data)
        return _decode(data, fmt, max_pixels)
    except ReferenceRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ReferenceRejected(f"could not decode the {fmt} image (decompression bomb)") from exc
    except Exception as exc:  # untrusted bytes: Pillow raises OSError, SyntaxError, ValueError, ...
        raise ReferenceRejected(f"could not decode the {fmt} image (truncated or corrupt)") from exc
