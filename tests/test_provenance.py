"""Tests for seedream_server.provenance: the implicit AIGC label in XMP, EXIF and PNG iTXt, written
through postprocess.encode_image and read back with read_provenance."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image, PngImagePlugin

from image_support import FORMATS
from image_support import gradient as _gradient
from image_support import provenance_label as _prov
from seedream_server import postprocess, provenance
from seedream_server.postprocess import encode_image
from seedream_server.provenance import Labels, Provenance, read_provenance

# --- labels written by encode_image and read back ------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_provenance_round_trip(fmt: str) -> None:
    prov = _prov()
    data = encode_image(_gradient(320, 240), provenance=prov, output_format=fmt)
    label = read_provenance(data)
    assert label["Label"] == "1"
    assert label["ContentProducer"] == "seedream-server"
    assert label["ProduceID"] == prov.content_id
    assert label["ReservedCode1"] == prov.model
    assert label["model"] == prov.model
    assert label["engine"] == "preview"
    assert label["created"] == "1757469561"
    assert label["watermarked"] == "True"
    assert label["creator_tool"] == "seedream-server"
    assert label["creator"] == "seedream-server"
    assert label["digital_source_type"].endswith("/trainedAlgorithmicMedia")
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
        assert im.size == (320, 240)


@pytest.mark.parametrize("fmt", FORMATS)
def test_content_ids_differ(fmt: str) -> None:
    im = _gradient(128, 128)
    a = encode_image(im, provenance=_prov("id-a"), output_format=fmt)
    b = encode_image(im, provenance=_prov("id-b"), output_format=fmt)
    assert a != b
    assert read_provenance(a)["ProduceID"] == "id-a"
    assert read_provenance(b)["ProduceID"] == "id-b"


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_exif_carries_the_label(fmt: str) -> None:
    data = encode_image(_gradient(64, 64), provenance=_prov(watermarked=False), output_format=fmt)
    with Image.open(io.BytesIO(data)) as im:
        exif = im.getexif()
    assert '"Label":"1"' in exif[0x010E]
    assert '"ProduceID":"cgt-20250910-0001"' in exif[0x010E]
    assert exif[0x0131] == "seedream-server"
    comment = exif.get_ifd(0x8769)[0x9286]
    assert comment.startswith(b"ASCII\x00\x00\x00") and b'"Label":"1"' in comment


def test_read_provenance_falls_back_to_exif() -> None:
    data = encode_image(_gradient(64, 64), provenance=_prov(), output_format="jpeg")
    stripped = data.replace(b"<x:xmpmeta", b"<x:xmpmetX")  # XMP no longer recognisable
    label = read_provenance(stripped)
    assert label["Label"] == "1" and label["ProduceID"] == "cgt-20250910-0001"
    assert label["model"] == "doubao-seedream-4-0-250828"


def test_read_provenance_of_unlabelled_image_is_empty() -> None:
    buf = io.BytesIO()
    _gradient(32, 32).save(buf, "JPEG")
    assert read_provenance(buf.getvalue()) == {}
    assert read_provenance(b"not an image") == {}


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_ascii_and_xml_special_values_round_trip(fmt: str) -> None:
    prov = _prov("id-<&>\"'", producer="种子梦服务 & co", model='m"<x>', engine="引擎", watermarked=False)
    data = encode_image(_gradient(64, 64), provenance=prov, output_format=fmt)
    label = read_provenance(data)
    assert label["ContentProducer"] == "种子梦服务 & co"
    assert label["ProduceID"] == "id-<&>\"'"
    assert label["model"] == 'm"<x>' and label["engine"] == "引擎"
    assert label["watermarked"] == "False"
    # The EXIF copy stays pure ASCII (JSON escapes) and still decodes to the same label.
    if fmt == "png":  # mangling the iTXt chunk would break its CRC; PNG EXIF is checked elsewhere
        return
    stripped = data.replace(b"<x:xmpmeta", b"<x:xmpmetX")
    assert read_provenance(stripped)["ContentProducer"] == "种子梦服务 & co"


def test_manual_app1_insertion_for_old_pillow() -> None:
    """The fallback used when Pillow cannot write JPEG XMP itself (Pillow < 11)."""
    buf = io.BytesIO()
    _gradient(64, 64).save(buf, "JPEG", quality=90)
    xmp = provenance.build_xmp(_prov("old-pillow"))
    data = provenance.insert_jpeg_app1_xmp(buf.getvalue(), xmp)
    assert data[:2] == b"\xff\xd8"
    assert read_provenance(data)["ProduceID"] == "old-pillow"
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.size == (64, 64)
        assert provenance.XMP_START in im.info["xmp"]


def test_provenance_is_frozen() -> None:
    prov = _prov()
    with pytest.raises(AttributeError):
        prov.model = "other"  # type: ignore[misc]
    assert prov.producer == "seedream-server"


def test_postprocess_re_exports_the_provenance_names() -> None:
    assert postprocess.Provenance is Provenance
    assert postprocess.read_provenance is read_provenance


def test_aigc_label_fields() -> None:
    assert _prov().aigc_label() == {
        "Label": "1",
        "ContentProducer": "seedream-server",
        "ProduceID": "cgt-20250910-0001",
        "ReservedCode1": "doubao-seedream-4-0-250828",
        "ContentPropagator": "",
        "PropagateID": "",
        "ReservedCode2": "",
    }


def test_labels_save_args_per_format() -> None:
    labels = Labels.of(_prov())
    assert labels == Labels.of(_prov())  # deterministic
    assert labels.xmp.startswith(b"<?xpacket") and provenance.XMP_START in labels.xmp
    png = labels.save_args("PNG")
    assert isinstance(png["pnginfo"], PngImagePlugin.PngInfo) and png["exif"] == labels.exif
    assert labels.save_args("WEBP") == {"exif": labels.exif, "xmp": labels.xmp}
    assert labels.save_args("JPEG")["exif"] == labels.exif
    assert labels.finish("PNG", b"png bytes") == b"png bytes"


def test_app1_goes_after_the_leading_app_segments() -> None:
    buf = io.BytesIO()
    _gradient(32, 32).save(buf, "JPEG", exif=Labels.of(_prov()).exif)  # APP0 (JFIF) and APP1 (EXIF)
    plain = buf.getvalue()
    data = provenance.insert_jpeg_app1_xmp(plain, b"<x:xmpmeta/>")
    at = data.index(b"http://ns.adobe.com/xap/1.0/\x00") - 4  # marker and length come first
    assert data[at : at + 2] == b"\xff\xe1"
    assert plain.index(b"Exif") < at  # after the EXIF APP1
    assert data[:at] + data[at + 4 + len(b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>") :] == plain


def test_app1_rejects_a_packet_too_large() -> None:
    with pytest.raises(ValueError, match="too large"):
        provenance.insert_jpeg_app1_xmp(b"\xff\xd8\xff\xd9", b"x" * 0xFFFF)


def test_exif_label_with_aigc_prefix_is_read() -> None:
    label = json.dumps(_prov("prefixed").aigc_label())
    exif = Image.Exif()
    exif[0x010E] = "AIGC=" + label
    buf = io.BytesIO()
    _gradient(16, 16).save(buf, "JPEG", exif=exif.tobytes())
    found = read_provenance(buf.getvalue())
    assert found["ProduceID"] == "prefixed" and found["model"] == "doubao-seedream-4-0-250828"
