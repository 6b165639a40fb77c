"""Checks before any pixel (references/header.py): format sniffing, size limits read from the header, and
the JPEG structure (scan floods, headers larger than their data, arithmetic coding)."""

from __future__ import annotations

from functools import cache

import pytest
from PIL import Image

from references_support import jpeg_with_size, noise, refused, scan_flood_jpeg
from refserver import data_uri, encode, png_of_size, solid
from seedream_server.errors import InvalidParameter
from seedream_server.references import (
    MAX_JPEG_SCANS,
    ReferencePolicy,
    ReferenceRejected,
    check_jpeg_structure,
    fetch_references,
    inspect_image,
    load_references,
    sniff_format,
)


@cache
def flood() -> bytes:
    return scan_flood_jpeg()


# ------------------------------------------------------------------------------------------------
# Limits, checked from the header


async def test_decompression_bomb_is_refused_from_the_header() -> None:
    bomb = png_of_size(50_000, 50_000)
    assert len(bomb) < 1_000_000  # 2.5 G pixels in a few hundred KB
    message = await refused(data_uri(bomb, "png"))
    assert "more than 36000000 (decompression bomb)" in message
    # under Pillow's own limit, our header check names the size
    message = await refused(data_uri(png_of_size(9000, 9000), "png"))
    assert "9000x9000 = 81000000 pixels, more than 36000000" in message


async def test_pixel_limit_is_exact() -> None:
    assert "more than 36000000" in await refused(data_uri(png_of_size(6001, 6000, full=False), "png"))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((14, 100), "at least 15 px"),
        ((100, 14), "at least 15 px"),
        ((15, 255), "aspect ratio 15:255 is outside [1/16, 16]"),
        ((255, 15), "aspect ratio 255:15"),
    ],
)
async def test_dimension_and_aspect_limits(size: tuple[int, int], expected: str) -> None:
    assert expected in await refused(data_uri(encode(solid(size), "png"), "png"))


@pytest.mark.parametrize("size", [(15, 15), (16, 256), (256, 16)])
async def test_limits_are_inclusive(size: tuple[int, int]) -> None:
    [ref] = await load_references(data_uri(encode(solid(size), "png"), "png"), ReferencePolicy())
    assert (ref.width, ref.height) == size


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"),
        (b"BM\x00\x00", "bmp"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
        (b"GIF87a", "gif"),
        (b"\x00\x00\x00\x1cftypavif", "avif"),
        (b"<svg xmlns=", "svg"),
        (b"<!doctype html>", "html"),
        (b"%PDF-1.7", "pdf"),
        (b"\x00\x01\x02", "unknown"),
    ],
)
def test_sniff_format(head: bytes, fmt: str) -> None:
    assert sniff_format(head) == fmt


# ------------------------------------------------------------------------------------------------
# JPEG structure


async def test_scan_flood_jpeg_is_refused_before_decoding() -> None:
    data = flood()
    scans = data.count(b"\xff\xda")
    assert len(data) < 1_000_000 and scans > 3000
    with pytest.raises(InvalidParameter) as info:
        await fetch_references([data_uri(data, "jpeg")], ReferencePolicy())  # fetching never decodes
    assert info.value.param == "image"
    assert info.value.message == (
        f"image[0]: JPEG has {scans} scans, more than the {MAX_JPEG_SCANS} any encoder writes"
    )
    with pytest.raises(InvalidParameter, match=r"^image\[0\]: JPEG has \d+ scans"):
        await fetch_references([data], ReferencePolicy())  # an upload: the same check


def test_progressive_jpeg_from_an_encoder_passes() -> None:
    for image in (solid((6000, 6000), (90, 140, 200)), solid((300, 200))):
        data = encode(image, "jpeg", progressive=True, quality=95)
        check_jpeg_structure(data, MAX_JPEG_SCANS)
        assert inspect_image(data, "jpeg", ReferencePolicy()) == ("jpeg", image.width, image.height)
    for params in ({"optimize": True}, {"subsampling": 0}, {"quality": 5}, {}):
        check_jpeg_structure(encode(solid((6000, 40)).convert("L"), "jpeg", **params), MAX_JPEG_SCANS)


def test_scan_limit_is_a_policy_setting() -> None:
    data = encode(solid((64, 64)), "jpeg", progressive=True)
    scans = data.count(b"\xff\xda")
    check_jpeg_structure(data, scans)
    with pytest.raises(ReferenceRejected, match=f"JPEG has {scans} scans, more than the {scans - 1}"):
        check_jpeg_structure(data, scans - 1)


async def test_jpeg_header_larger_than_its_data_is_refused() -> None:
    corrupt = jpeg_with_size(noise((16, 16), "jpeg"), 6000, 6000)
    assert len(corrupt) < 2000
    message = await refused(data_uri(corrupt, "jpeg"))
    assert message.startswith("image[0]: JPEG data (") and "too short for its 6000x6000 header" in message
    progressive = jpeg_with_size(noise((16, 16), "jpeg", progressive=True), 4000, 3000)
    assert "too short for its 4000x3000 header" in await refused(data_uri(progressive, "jpeg"))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xd9", "no frame or no scan"),
        (b"\xff\xd8\xff\xe0\x00\x01", "corrupt JPEG segment length"),
        (b"\xff\xd8" + b"\xff\xfe\x00\x02" * 10_001, "more than 10000 markers"),
    ],
)
def test_malformed_jpeg_structure(data: bytes, expected: str) -> None:
    with pytest.raises(ReferenceRejected, match=expected):
        check_jpeg_structure(data, MAX_JPEG_SCANS)


def test_arithmetic_coded_jpeg_is_refused() -> None:
    data = bytearray(encode(solid((32, 32)), "jpeg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = 0xC9  # SOF9: extended sequential, arithmetic coding
    with pytest.raises(ReferenceRejected, match="arithmetic-coded JPEG is not supported"):
        check_jpeg_structure(bytes(data), MAX_JPEG_SCANS)


def test_header_size_is_the_displayed_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(solid((40, 20)), "jpeg", exif=exif)
    assert inspect_image(data, None, ReferencePolicy()) == ("jpeg", 20, 40)
    landscape_only = ReferencePolicy(min_ratio=1.0, max_ratio=2.0)
    inspect_image(encode(solid((40, 20)), "jpeg"), None, landscape_only)
    with pytest.raises(ReferenceRejected, match="aspect ratio 20:40 is outside"):  # limits apply as displayed
        inspect_image(data, None, landscape_only)
