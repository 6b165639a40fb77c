"""Pure image functions for the "finish" step: resize, visible watermark, provenance, encoding.

This module owns everything that happens to a generated image between the engine and storage
(SPEC §3 "output is exactly W×H", SPEC §8 "Watermark and provenance"):

* :func:`resize_to` — exact output size, cover-crop centred, never distorted.
* :func:`add_watermark` — the visible "AI生成" mark, bottom-right, scaled to the image and legible
  on light and dark content, drawn with the OFL-licensed CJK font subset shipped in
  ``seedream_server/assets/fonts/`` (see ``OFL.txt`` there and ``scripts/build_font.py``).
* :class:`Provenance`, :func:`encode_image`, :func:`read_provenance` — implicit AIGC labelling in
  the spirit of China's GB 45438-2025: every encoded image (JPEG, PNG or WebP) carries an XMP
  packet with a ``TC260:AIGC`` JSON label (``Label``, ``ContentProducer``, ``ProduceID``,
  ``ReservedCode1`` = model, ...), ``dc:creator``, ``xmp:CreatorTool`` and the IPTC digital
  source type for AI-generated media, plus EXIF (``ImageDescription``, ``Software``,
  ``UserComment``) holding the same label. Encoding is deterministic: same pixels and same
  provenance give the same bytes.

Nothing here does I/O beyond reading the packaged font, and nothing imports the rest of the package.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from importlib import resources
from typing import Final

import PIL
from PIL import Image, ImageDraw, ImageFilter, ImageFont, PngImagePlugin

__all__ = [
    "DEFAULT_FONT_RESOURCE",
    "DEFAULT_WATERMARK_TEXT",
    "Provenance",
    "add_watermark",
    "encode_image",
    "read_provenance",
    "resize_to",
]

#: Text drawn by :func:`add_watermark` when none is given.
DEFAULT_WATERMARK_TEXT: Final = "AI生成"
#: The shipped font, relative to the ``seedream_server`` package.
DEFAULT_FONT_RESOURCE: Final = "assets/fonts/NotoSansCJKsc-Bold-subset.otf"
_PACKAGE: Final = "seedream_server"

#: Output formats :func:`encode_image` accepts (``jpg`` is an alias of ``jpeg``).
_FORMATS: Final = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}

# --- resize -----------------------------------------------------------------------------------


# Not references._to_rgb: that one also rescales 16-bit and float decodes, and flattens fewer modes.
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


def resize_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """Return an RGB image of exactly ``width`` x ``height``.

    When the aspect ratio differs, the image is scaled to cover the target and centre-cropped
    (never stretched). The crop and the scale are one resampling pass: LANCZOS when downscaling,
    BICUBIC when upscaling. The same object is returned when it is already RGB and the right size.

    Raises:
        ValueError: ``width`` or ``height`` is not positive.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    src_w, src_h = image.size
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"source image is empty ({src_w}x{src_h})")
    rgb = _to_rgb(image)
    if (src_w, src_h) == (width, height):
        return rgb
    # The largest centred source box with the target's aspect ratio.
    if src_w * height > width * src_h:  # source is wider: crop left and right
        box_w, box_h = src_h * width / height, float(src_h)
    else:  # source is taller (or same aspect): crop top and bottom
        box_w, box_h = float(src_w), src_w * height / width
    left = (src_w - box_w) / 2
    top = (src_h - box_h) / 2
    downscaling = width < box_w or height < box_h
    resample = Image.Resampling.LANCZOS if downscaling else Image.Resampling.BICUBIC
    return rgb.resize((width, height), resample, box=(left, top, left + box_w, top + box_h))


# --- watermark --------------------------------------------------------------------------------

#: Text height as a fraction of the shorter image side, and the smallest font size in pixels.
_WATERMARK_SCALE: Final = 0.035
_WATERMARK_MIN_PX: Final = 12
_TEXT_FILL: Final = (255, 255, 255, 240)
_STROKE_FILL: Final = (0, 0, 0, 170)
_SHADOW_FILL: Final = (0, 0, 0, 110)


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


def _fit_font(text: str, font_path: str | None, size: int, max_width: int) -> ImageFont.FreeTypeFont:
    """The font at ``size``, shrunk (not below the minimum) until ``text`` fits ``max_width``."""
    font = _load_font(font_path, size)
    for _ in range(4):
        left, _top, right, _bottom = font.getbbox(text, stroke_width=max(1, round(size * 0.08)))
        text_w = right - left
        if text_w <= max_width or size <= _WATERMARK_MIN_PX:
            break
        size = max(_WATERMARK_MIN_PX, int(size * max_width / text_w))
        font = _load_font(font_path, size)
    return font


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
    margin = max(4, round(size * 0.6))
    font = _fit_font(text, font_path, size, max(1, img_w - 2 * margin))
    size = int(font.size)
    stroke = max(1, round(size * 0.08))
    shadow_offset = max(1, round(size * 0.05))
    blur = max(1.0, size * 0.06)
    pad = stroke * 2 + shadow_offset + int(blur * 2) + 1

    bbox = font.getbbox(text, stroke_width=stroke)
    left, top = math.floor(bbox[0]), math.floor(bbox[1])
    right, bottom = math.ceil(bbox[2]), math.ceil(bbox[3])
    text_w, text_h = right - left, bottom - top
    layer_w, layer_h = text_w + 2 * pad, text_h + 2 * pad
    # The layer's origin in image coordinates: text box ends `margin` px from the corner.
    x0 = img_w - margin - text_w - pad
    y0 = img_h - margin - text_h - pad
    origin = (pad - left, pad - top)  # where to draw so the bbox starts at (pad, pad)

    shadow = Image.new("RGBA", (layer_w, layer_h), (0, 0, 0, 0))
    ImageDraw.Draw(shadow).text(
        (origin[0] + shadow_offset, origin[1] + shadow_offset),
        text,
        font=font,
        fill=_SHADOW_FILL,
        stroke_width=stroke * 2,
        stroke_fill=_SHADOW_FILL,
    )
    layer = shadow.filter(ImageFilter.GaussianBlur(blur))
    glyphs = Image.new("RGBA", (layer_w, layer_h), (0, 0, 0, 0))
    ImageDraw.Draw(glyphs).text(origin, text, font=font, fill=_TEXT_FILL, stroke_width=stroke, stroke_fill=_STROKE_FILL)
    layer.alpha_composite(glyphs)

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


# --- provenance -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """Who made an image, with what, and when: the implicit AIGC label's content.

    Attributes:
        model: the model id the client asked for (e.g. ``doubao-seedream-4-0-250828``).
        content_id: a unique id for this image (``ProduceID`` in the label).
        created: creation time, unix seconds.
        watermarked: whether the visible mark was drawn.
        engine: the backend that generated the pixels (e.g. ``diffusers``, ``preview``).
        producer: the service that produced it (``ContentProducer``).
    """

    model: str
    content_id: str
    created: int
    watermarked: bool
    engine: str
    producer: str = "seedream-server"

    def aigc_label(self) -> dict[str, str]:
        """The GB 45438-2025 style implicit label (propagator fields left for distributors)."""
        return {
            "Label": "1",
            "ContentProducer": self.producer,
            "ProduceID": self.content_id,
            "ReservedCode1": self.model,
            "ContentPropagator": "",
            "PropagateID": "",
            "ReservedCode2": "",
        }


_NS_X: Final = "adobe:ns:meta/"
_NS_RDF: Final = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_NS_DC: Final = "http://purl.org/dc/elements/1.1/"
_NS_XMP: Final = "http://ns.adobe.com/xap/1.0/"
_NS_IPTC_EXT: Final = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
_NS_TC260: Final = "http://www.tc260.org.cn/ns/AIGC/1.0/"
_NS_SEEDREAM: Final = "urn:seedream-server:xmp:1.0/"
_DIGITAL_SOURCE_TYPE: Final = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_XMP_START: Final = b"<x:xmpmeta"
_XMP_END: Final = b"</x:xmpmeta>"
_XMP_MAX: Final = 64 * 1024
_EXIF_IFD: Final = 0x8769
_TAG_IMAGE_DESCRIPTION: Final = 0x010E
_TAG_SOFTWARE: Final = 0x0131
_TAG_DATETIME: Final = 0x0132
_TAG_ARTIST: Final = 0x013B
_TAG_USER_COMMENT: Final = 0x9286
_USER_COMMENT_ASCII: Final = b"ASCII\x00\x00\x00"
#: Pillow 11 added the ``xmp=`` argument to JPEG saving; older versions get a hand-made APP1.
_JPEG_SAVE_XMP: Final = int(PIL.__version__.split(".", 1)[0]) >= 11


def _xml_attr(value: str) -> str:
    """Escape ``value`` for a double-quoted XML attribute (keeps UTF-8 text as is)."""
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .replace("\t", "&#9;")
    )


def _xml_text(value: str) -> str:
    """Escape ``value`` for XML character data."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso8601(unix_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_seconds))


def _label_json(provenance: Provenance, *, ascii_only: bool) -> str:
    return json.dumps(provenance.aigc_label(), ensure_ascii=ascii_only, separators=(",", ":"))


def _build_xmp(provenance: Provenance) -> bytes:
    """The XMP packet (UTF-8) carrying the AIGC label and the usual creator fields."""
    created = _iso8601(provenance.created)
    attrs = {
        "xmp:CreatorTool": provenance.producer,
        "xmp:CreateDate": created,
        "xmp:MetadataDate": created,
        "Iptc4xmpExt:DigitalSourceType": _DIGITAL_SOURCE_TYPE,
        "TC260:AIGC": _label_json(provenance, ascii_only=False),
        "seedream:Model": provenance.model,
        "seedream:Engine": provenance.engine,
        "seedream:ContentID": provenance.content_id,
        "seedream:Created": str(provenance.created),
        "seedream:Watermarked": "True" if provenance.watermarked else "False",
    }
    attr_text = "".join(f'\n    {name}="{_xml_attr(value)}"' for name, value in attrs.items())
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="{_NS_X}" x:xmptk="{_xml_attr(provenance.producer)}">\n'
        f' <rdf:RDF xmlns:rdf="{_NS_RDF}">\n'
        '  <rdf:Description rdf:about=""\n'
        f'    xmlns:dc="{_NS_DC}"\n'
        f'    xmlns:xmp="{_NS_XMP}"\n'
        f'    xmlns:Iptc4xmpExt="{_NS_IPTC_EXT}"\n'
        f'    xmlns:TC260="{_NS_TC260}"\n'
        f'    xmlns:seedream="{_NS_SEEDREAM}"{attr_text}>\n'
        f"   <dc:creator><rdf:Seq><rdf:li>{_xml_text(provenance.producer)}</rdf:li></rdf:Seq></dc:creator>\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )
    return packet.encode("utf-8")


def _build_exif(provenance: Provenance) -> bytes:
    """EXIF (TIFF) bytes with the label in ImageDescription and UserComment (ASCII, JSON-escaped)."""
    label = _label_json(provenance, ascii_only=True)
    exif = Image.Exif()
    exif[_TAG_IMAGE_DESCRIPTION] = label
    exif[_TAG_SOFTWARE] = provenance.producer.encode("ascii", "backslashreplace").decode("ascii")
    exif[_TAG_ARTIST] = exif[_TAG_SOFTWARE]
    exif[_TAG_DATETIME] = time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(provenance.created))
    exif.get_ifd(_EXIF_IFD)[_TAG_USER_COMMENT] = _USER_COMMENT_ASCII + label.encode("ascii")
    return exif.tobytes()


def _insert_jpeg_app1_xmp(data: bytes, xmp: bytes) -> bytes:
    """Insert an XMP APP1 segment after the leading APPn segments of a JPEG stream."""
    payload = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("XMP packet too large for one JPEG APP1 segment")
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    pos = 2  # after SOI
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return data[:pos] + segment + data[pos:]


def encode_image(
    image: Image.Image, *, provenance: Provenance, output_format: str = "jpeg", quality: int = 90
) -> bytes:
    """Encode ``image`` as JPEG (default), PNG or WebP with implicit AIGC provenance metadata.

    Every output carries the XMP packet (JPEG: APP1; PNG: ``iTXt`` ``XML:com.adobe.xmp``; WebP:
    ``XMP`` chunk) and EXIF (ImageDescription, Software, Artist, DateTime, UserComment) with the
    same label. Any metadata the input image carried (ICC profile, old EXIF, text chunks) is
    dropped, so the result depends only on the pixels, ``provenance`` and the arguments.
    ``quality`` (1..100) applies to JPEG and WebP. JPEG output is RGB; transparency is flattened
    onto white.

    Raises:
        ValueError: unknown ``output_format`` or ``quality`` out of range.
    """
    fmt = _FORMATS.get(output_format.lower().strip())
    if fmt is None:
        raise ValueError(f"unsupported output_format {output_format!r}; expected jpeg, png or webp")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be within 1..100, got {quality}")

    im = _to_rgb(image) if fmt == "JPEG" or image.mode not in ("RGB", "RGBA") else image
    if im.info:  # never let a source's metadata leak into (or perturb) the output
        im = im.copy()
        im.info.clear()

    xmp = _build_xmp(provenance)
    exif = _build_exif(provenance)
    buf = io.BytesIO()
    if fmt == "JPEG":
        if _JPEG_SAVE_XMP:
            im.save(buf, "JPEG", quality=quality, optimize=True, exif=exif, xmp=xmp)
            return buf.getvalue()
        im.save(buf, "JPEG", quality=quality, optimize=True, exif=exif)
        return _insert_jpeg_app1_xmp(buf.getvalue(), xmp)
    if fmt == "PNG":
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"), lang="", tkey="", zip=False)
        im.save(buf, "PNG", pnginfo=pnginfo, exif=exif, compress_level=6)
        return buf.getvalue()
    im.save(buf, "WEBP", quality=quality, method=4, exif=exif, xmp=xmp)
    return buf.getvalue()


def _provenance_from_xmp(packet: bytes) -> dict[str, str]:
    """Parse our XMP packet; returns {} when it holds no AIGC label."""
    try:
        root = ET.fromstring(packet.decode("utf-8"))
    except (ET.ParseError, UnicodeDecodeError):
        return {}
    result: dict[str, str] = {}
    for desc in root.iter(f"{{{_NS_RDF}}}Description"):
        label = desc.get(f"{{{_NS_TC260}}}AIGC")
        if label is not None:
            result.update(_parse_label(label))
        extras = {
            "model": f"{{{_NS_SEEDREAM}}}Model",
            "engine": f"{{{_NS_SEEDREAM}}}Engine",
            "content_id": f"{{{_NS_SEEDREAM}}}ContentID",
            "created": f"{{{_NS_SEEDREAM}}}Created",
            "watermarked": f"{{{_NS_SEEDREAM}}}Watermarked",
            "creator_tool": f"{{{_NS_XMP}}}CreatorTool",
            "digital_source_type": f"{{{_NS_IPTC_EXT}}}DigitalSourceType",
        }
        for key, attr in extras.items():
            value = desc.get(attr)
            if value is not None:
                result[key] = value
        for li in desc.iterfind(f"{{{_NS_DC}}}creator/{{{_NS_RDF}}}Seq/{{{_NS_RDF}}}li"):
            result.setdefault("creator", li.text or "")
    return result if "Label" in result else {}


def _parse_label(text: str) -> dict[str, str]:
    """Parse an AIGC label JSON object (optionally prefixed ``AIGC=``) into strings."""
    text = text.strip()
    if text.startswith("AIGC="):
        text = text[5:]
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _provenance_from_exif(data: bytes) -> dict[str, str]:
    """Fallback: the label from EXIF ImageDescription or UserComment; {} when absent."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            exif = im.getexif()
            candidates: list[str] = []
            description = exif.get(_TAG_IMAGE_DESCRIPTION)
            if isinstance(description, str):
                candidates.append(description)
            comment = exif.get_ifd(_EXIF_IFD).get(_TAG_USER_COMMENT)
            if isinstance(comment, bytes) and comment.startswith(_USER_COMMENT_ASCII):
                candidates.append(comment[len(_USER_COMMENT_ASCII) :].decode("ascii", "replace"))
            software = exif.get(_TAG_SOFTWARE)
    except (OSError, ValueError, SyntaxError):
        return {}
    for candidate in candidates:
        label = _parse_label(candidate)
        if "Label" in label:
            label.setdefault("model", label.get("ReservedCode1", ""))
            if isinstance(software, str):
                label.setdefault("creator_tool", software)
            return label
    return {}


_XMP_RE: Final = re.compile(re.escape(_XMP_START) + rb".*?" + re.escape(_XMP_END), re.DOTALL)


def read_provenance(data: bytes) -> dict[str, str]:
    """Read the implicit AIGC label back from encoded image bytes (JPEG, PNG or WebP).

    Returns the label's fields (``Label``, ``ContentProducer``, ``ProduceID``, ``ReservedCode1``,
    ...) plus, when the XMP packet is present, ``model``, ``engine``, ``content_id``, ``created``
    (unix seconds), ``watermarked`` (``"True"``/``"False"``), ``creator_tool``, ``creator`` and
    ``digital_source_type``. Falls back to the EXIF copy of the label when XMP was stripped.
    Returns an empty dict when the image carries no label.
    """
    for match in _XMP_RE.finditer(data):
        packet = match.group(0)
        if len(packet) <= _XMP_MAX:
            found = _provenance_from_xmp(packet)
            if found:
                return found
    return _provenance_from_exif(data)
