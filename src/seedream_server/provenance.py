"""Implicit AIGC labels: what an encoded image says about its own making (XMP, EXIF, PNG iTXt).

This module owns the metadata half of SPEC §8 "Watermark and provenance", in the spirit of China's
GB 45438-2025: every encoded image (JPEG, PNG or WebP) carries an XMP packet with a ``TC260:AIGC``
JSON label (``Label``, ``ContentProducer``, ``ProduceID``, ``ReservedCode1`` = model, ...),
``dc:creator``, ``xmp:CreatorTool`` and the IPTC digital source type for AI-generated media, plus
EXIF (``ImageDescription``, ``Software``, ``Artist``, ``DateTime``, ``UserComment``) holding the same
label.

* :class:`Provenance` -- the label's content.
* :class:`Labels` -- the XMP and EXIF bytes of one image and the Pillow ``save()`` arguments that
  embed them per format (JPEG APP1, PNG ``iTXt``, WebP ``XMP`` chunk); :mod:`.postprocess` encodes.
* :func:`read_provenance` -- the label read back from encoded bytes (XMP first, EXIF as fallback).

Pure functions over bytes and Pillow images; nothing imports the rest of the package.
"""

from __future__ import annotations

import io
import json
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any, Final

import PIL
from PIL import Image, PngImagePlugin

__all__ = ["Labels", "Provenance", "build_exif", "build_xmp", "insert_jpeg_app1_xmp", "read_provenance"]


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
XMP_START: Final = b"<x:xmpmeta"
"""How an XMP packet's root element begins in the encoded bytes."""
_XMP_END: Final = b"</x:xmpmeta>"
_XMP_MAX: Final = 64 * 1024  # a longer match is not one of our packets
_EXIF_IFD: Final = 0x8769
_TAG_IMAGE_DESCRIPTION: Final = 0x010E
_TAG_SOFTWARE: Final = 0x0131
_TAG_DATETIME: Final = 0x0132
_TAG_ARTIST: Final = 0x013B
_TAG_USER_COMMENT: Final = 0x9286
_USER_COMMENT_ASCII: Final = b"ASCII\x00\x00\x00"
_AIGC_PREFIX: Final = "AIGC="  # some writers prefix the label's JSON with this
_PNG_XMP_KEY: Final = "XML:com.adobe.xmp"  # the iTXt keyword XMP lives under in PNG
#: Pillow 11 added the ``xmp=`` argument to JPEG saving; older versions get a hand-made APP1.
_PILLOW_JPEG_XMP_MAJOR: Final = 11
_JPEG_SAVE_XMP: Final = int(PIL.__version__.split(".", 1)[0]) >= _PILLOW_JPEG_XMP_MAJOR

# JPEG segments: a 2-byte marker (0xFF, kind), then a 2-byte big-endian length that counts itself.
_JPEG_SOI_LEN: Final = 2  # the start-of-image marker every stream begins with
_JPEG_MARKER_LEN: Final = 2
_JPEG_LENGTH_LEN: Final = 2
_JPEG_MAX_SEGMENT: Final = 0xFFFF  # the largest value of the length field
_JPEG_MARKER_PREFIX: Final = 0xFF
_JPEG_APP0: Final = 0xE0
_JPEG_APP15: Final = 0xEF
_JPEG_APP1: Final = b"\xff\xe1"
_XMP_APP1_ID: Final = b"http://ns.adobe.com/xap/1.0/\x00"  # how an APP1 segment says it holds XMP


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


def build_xmp(provenance: Provenance) -> bytes:
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


def build_exif(provenance: Provenance) -> bytes:
    """EXIF (TIFF) bytes with the label in ImageDescription and UserComment (ASCII, JSON-escaped)."""
    label = _label_json(provenance, ascii_only=True)
    exif = Image.Exif()
    exif[_TAG_IMAGE_DESCRIPTION] = label
    exif[_TAG_SOFTWARE] = provenance.producer.encode("ascii", "backslashreplace").decode("ascii")
    exif[_TAG_ARTIST] = exif[_TAG_SOFTWARE]
    exif[_TAG_DATETIME] = time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(provenance.created))
    exif.get_ifd(_EXIF_IFD)[_TAG_USER_COMMENT] = _USER_COMMENT_ASCII + label.encode("ascii")
    return exif.tobytes()


def insert_jpeg_app1_xmp(data: bytes, xmp: bytes) -> bytes:
    """Insert an XMP APP1 segment after the leading APPn segments of a JPEG stream.

    Raises:
        ValueError: the packet does not fit one APP1 segment.
    """
    payload = _XMP_APP1_ID + xmp
    length = _JPEG_LENGTH_LEN + len(payload)
    if length > _JPEG_MAX_SEGMENT:
        raise ValueError("XMP packet too large for one JPEG APP1 segment")
    segment = _JPEG_APP1 + length.to_bytes(_JPEG_LENGTH_LEN, "big") + payload
    pos = _JPEG_SOI_LEN
    header = _JPEG_MARKER_LEN + _JPEG_LENGTH_LEN
    while pos + header <= len(data) and data[pos] == _JPEG_MARKER_PREFIX and _JPEG_APP0 <= data[pos + 1] <= _JPEG_APP15:
        pos += _JPEG_MARKER_LEN + int.from_bytes(data[pos + _JPEG_MARKER_LEN : pos + header], "big")
    return data[:pos] + segment + data[pos:]


@dataclass(frozen=True)
class Labels:
    """The XMP packet and EXIF bytes of one image, and how Pillow embeds them per format."""

    xmp: bytes
    exif: bytes

    @classmethod
    def of(cls, provenance: Provenance) -> Labels:
        """Build the labels of ``provenance`` (deterministic: same provenance, same bytes)."""
        return cls(build_xmp(provenance), build_exif(provenance))

    def save_args(self, pillow_format: str) -> dict[str, Any]:
        """Keyword arguments for ``Image.save`` in ``pillow_format`` ("JPEG", "PNG" or "WEBP")."""
        if pillow_format == "PNG":
            pnginfo = PngImagePlugin.PngInfo()
            pnginfo.add_itxt(_PNG_XMP_KEY, self.xmp.decode("utf-8"), lang="", tkey="", zip=False)
            return {"pnginfo": pnginfo, "exif": self.exif}
        if pillow_format == "JPEG" and not _JPEG_SAVE_XMP:
            return {"exif": self.exif}  # the XMP goes in afterwards, see finish()
        return {"exif": self.exif, "xmp": self.xmp}

    def finish(self, pillow_format: str, data: bytes) -> bytes:
        """The encoded bytes with whatever :meth:`save_args` could not embed (old Pillow's JPEG XMP)."""
        if pillow_format == "JPEG" and not _JPEG_SAVE_XMP:
            return insert_jpeg_app1_xmp(data, self.xmp)
        return data


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
    if text.startswith(_AIGC_PREFIX):
        text = text[len(_AIGC_PREFIX) :]
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


_XMP_RE: Final = re.compile(re.escape(XMP_START) + rb".*?" + re.escape(_XMP_END), re.DOTALL)


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
