"""Checks on a reference's bytes before any pixel is decoded: format, size, header and structure.

:func:`inspect_image` is what every reference passes, in the server process, before it is kept
(compressed) or decoded: byte size, the format sniffed from magic bytes (and compared with a declared
one), for JPEG the structure (:func:`check_jpeg_structure`: scan count, enough entropy-coded data for
the frame's size, no arithmetic coding), then the header read by Pillow (no pixel decoded) with the
size, pixel and aspect limits applied to the displayed (EXIF-oriented) size.
"""

from __future__ import annotations

import io
import re
import struct
from typing import Final

from PIL import Image

from .errors import ReferenceRejected
from .policy import FORMATS, ImageFormat, ReferencePolicy

__all__ = [
    "FORMAT_ALIASES",
    "PIL_NAMES",
    "check_jpeg_structure",
    "check_size",
    "inspect_image",
    "sniff_format",
    "unsupported",
]

PIL_NAMES: Final[dict[str, str]] = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
    "gif": "GIF",
}
FORMAT_ALIASES: Final[dict[str, ImageFormat]] = {f: f for f in FORMATS} | {"jpg": "jpeg"}

_ORIENTATION: Final = 0x0112
_TRANSPOSED: Final = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


def sniff_format(data: bytes) -> str:
    """Name the format of ``data`` from its magic bytes (one of FORMATS, or another name)."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "avif" if brand in (b"avif", b"avis") else "heic"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"\x00\x00\x01\x00"):
        return "ico"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in text or (text.startswith(b"<?xml") and b"<svg" in data[:4096].lower()):
        return "svg"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "html"
    if text.startswith((b"<", b"{", b"[")):
        return "text"
    return "unknown"


def unsupported(fmt: str) -> ReferenceRejected:
    """The refusal for a format we do not take."""
    if fmt == "unknown":
        return ReferenceRejected("unsupported image format (not jpeg, png, webp, bmp, tiff or gif)")
    return ReferenceRejected(f"unsupported image format '{fmt}'")


def check_size(width: int, height: int, policy: ReferencePolicy) -> None:
    """The policy's minimum side, pixel count and aspect ratio limits (all inclusive)."""
    if width < policy.min_side or height < policy.min_side:
        raise ReferenceRejected(f"image is {width}x{height} px; width and height must be at least {policy.min_side} px")
    if width * height > policy.max_pixels:
        raise ReferenceRejected(f"image is {width}x{height} = {width * height} pixels, more than {policy.max_pixels}")
    ratio = width / height
    if not policy.min_ratio <= ratio <= policy.max_ratio:
        raise ReferenceRejected(
            f"aspect ratio {width}:{height} is outside [1/{round(1 / policy.min_ratio)}, {policy.max_ratio:g}]"
        )


# --------------------------------------------------------------------------------------------------
# JPEG structure

_SOS: Final = b"\xff\xda"
# the end of an entropy-coded segment: 0xFF (after any fill 0xFF) followed by neither a stuffed 0x00
# nor a restart marker RST0..RST7, which live inside the segment
_SEGMENT_END = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..7: no length field
_SOF_HUFFMAN: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_SOF_ARITHMETIC: Final = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_MAX_SEGMENTS: Final = 10_000  # markers outside scans; real files have tens (hundreds with many scans)


def _blocks(frame: bytes) -> tuple[int, int, int]:
    """(width, height, 8x8 blocks over all components) from an SOF segment's body."""
    _precision, height, width, count = struct.unpack_from(">BHHB", frame)
    sampling = [(frame[6 + 3 * i + 1] >> 4, frame[6 + 3 * i + 1] & 0x0F) for i in range(count)]
    if not sampling or any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in sampling):
        raise ReferenceRejected("corrupt JPEG frame header (sampling factors)")
    h_max = max(h for h, _ in sampling)
    v_max = max(v for _, v in sampling)
    blocks = 0
    for h, v in sampling:  # a component's own size, not padded to whole MCUs: a lower bound
        component_w = -(-width * h // h_max)
        component_h = -(-height * v // v_max)
        blocks += -(-component_w // 8) * -(-component_h // 8)
    return width, height, blocks


def _walk_jpeg(data: bytes) -> tuple[bytes | None, int, int]:
    """(SOF marker + body or None, scans, entropy-coded bytes) following markers as a decoder does."""
    frame: bytes | None = None
    scans = entropy = 0
    pos, end = 2, len(data)  # after SOI
    for _ in range(_MAX_SEGMENTS):
        if pos + 1 >= end:
            break
        if data[pos] != 0xFF:  # garbage between segments: decoders skip to the next marker
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        code = data[pos + 1]
        if code == 0xFF:  # fill byte
            pos += 1
            continue
        if code == 0xD9:  # EOI
            break
        if code in _STANDALONE or code == 0x00:
            pos += 2
            continue
        if pos + 4 > end:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise ReferenceRejected("corrupt JPEG segment length")
        body_start, pos = pos + 4, pos + 2 + length
        if code in _SOF_HUFFMAN or code in _SOF_ARITHMETIC:
            frame = frame or bytes([code]) + data[body_start:pos]
        elif code == 0xDA:
            scans += 1
            found = _SEGMENT_END.search(data, pos)
            stop = found.start() if found else end
            entropy += max(0, stop - pos)
            pos = stop
    else:
        raise ReferenceRejected(f"corrupt JPEG: more than {_MAX_SEGMENTS} markers")
    return frame, scans, entropy


def check_jpeg_structure(data: bytes, max_scans: int) -> None:
    """Refuse a JPEG with more than ``max_scans`` scans, arithmetic coding, or too little data for its size.

    The scan count is the number of SOS markers (``FF DA``) anywhere in the bytes, an upper bound of
    the real count: byte stuffing keeps ``FF DA`` out of entropy-coded data. Every Huffman-coded block
    costs at least one bit (its DC code), so the entropy-coded segments must hold at least one bit per
    8x8 block of the frame; a header that claims 6000x6000 over a 16x16 image's data fails that
    (decoders would fill the rest with grey at full cost). Pure: no Pillow, no pixels.
    """
    scans = data.count(_SOS)
    if scans > max_scans:
        raise ReferenceRejected(f"JPEG has {scans} scans, more than the {max_scans} any encoder writes")
    frame, real_scans, entropy = _walk_jpeg(data)
    if frame is None or len(frame) < 7 or real_scans == 0:
        raise ReferenceRejected("could not decode the jpeg image (no frame or no scan: truncated or corrupt)")
    if frame[0] in _SOF_ARITHMETIC:
        raise ReferenceRejected("arithmetic-coded JPEG is not supported")
    if len(frame) < 7 + 3 * frame[6]:
        raise ReferenceRejected("corrupt JPEG frame header")
    width, height, blocks = _blocks(frame[1:])
    if width == 0 or height == 0:
        raise ReferenceRejected("JPEG without a size in its frame header is not supported")
    if entropy * 8 < blocks:
        raise ReferenceRejected(
            f"JPEG data ({entropy} bytes) is too short for its {width}x{height} header (truncated or corrupt)"
        )


# --------------------------------------------------------------------------------------------------
# The header


def _orientation(opened: Image.Image, fmt: ImageFormat) -> int:
    """The EXIF orientation, read without decoding (Pillow's PNG ``getexif`` may load the image)."""
    try:
        if fmt == "png":
            raw = opened.info.get("exif")
            if not isinstance(raw, bytes):
                return 1
            exif = Image.Exif()
            exif.load(raw)
        else:
            exif = opened.getexif()
        value = exif.get(_ORIENTATION, 1)
    except Exception:  # untrusted metadata: the decoder ignores what it cannot read, and so do we
        return 1
    return value if isinstance(value, int) else 1


def _read_header(data: bytes, fmt: ImageFormat, policy: ReferencePolicy) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data), formats=[PIL_NAMES[fmt]]) as opened:
            width, height = opened.size
            check_size(width, height, policy)
            if _orientation(opened, fmt) in _TRANSPOSED:
                width, height = height, width
                check_size(width, height, policy)
    except ReferenceRejected:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses at open (header only) past 2 x Image.MAX_IMAGE_PIXELS, before check_size.
        raise ReferenceRejected(
            f"image has more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels, more than {policy.max_pixels} "
            "(decompression bomb)"
        ) from exc
    except Exception as exc:  # untrusted bytes: Pillow raises OSError, SyntaxError, ValueError, ...
        raise ReferenceRejected(f"could not decode the {fmt} image (truncated or corrupt)") from exc
    return width, height


def inspect_image(data: bytes, declared: ImageFormat | None, policy: ReferencePolicy) -> tuple[ImageFormat, int, int]:
    """(format, width, height as displayed) of ``data`` after every check that needs no pixel.

    Raises :class:`ReferenceRejected` for empty or oversized data, an unsupported format or one other
    than ``declared``, a JPEG failing :func:`check_jpeg_structure`, an unreadable header, or a size
    outside the policy's limits.
    """
    if not data:
        raise ReferenceRejected("empty image data")
    if len(data) > policy.max_bytes:
        raise ReferenceRejected(f"image is {len(data)} bytes, more than the {policy.max_bytes}-byte limit")
    sniffed = sniff_format(data)
    if sniffed not in PIL_NAMES:
        raise unsupported(sniffed)
    fmt = FORMAT_ALIASES[sniffed]
    if declared is not None and declared != fmt:
        raise ReferenceRejected(f"declared format '{declared}' does not match the content, which is '{fmt}'")
    if fmt == "jpeg":
        check_jpeg_structure(data, policy.max_jpeg_scans)
    width, height = _read_header(data, fmt, policy)
    return fmt, width, height
