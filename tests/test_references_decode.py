"""Decoding (references/decode.py): every format to RGB, orientation, first frames, alpha, strictness
(data that does not fill its header), and downscaling to a pixel budget (JPEG via DCT scaling)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from references_support import no_client, noise, png_with_rows, refused
from refserver import PNG_SIGNATURE, data_uri, encode, solid
from seedream_server.references import (
    FetchedReference,
    ReferencePolicy,
    ReferenceRejected,
    decode_reference,
    decoded_pixels,
    load_references,
    target_size,
)
from seedream_server.references.decode import check_png_data


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "bmp", "tiff", "gif"])
async def test_every_format_is_accepted_as_data_uri(fmt: str) -> None:
    data = encode(solid((40, 30), (10, 200, 30)), fmt)
    [ref] = await load_references(data_uri(data, fmt), ReferencePolicy(), client_factory=no_client)
    assert (ref.index, ref.format, ref.width, ref.height, ref.source) == (0, fmt, 40, 30, "data")
    assert ref.image.mode == "RGB" and ref.image.size == (40, 30)
    r, g, b = ref.image.getpixel((5, 5))  # type: ignore[misc]
    assert g > 150 and r < 60 and b < 80


async def test_gif_uses_its_first_frame() -> None:
    frames = [solid((32, 32), (255, 0, 0)), solid((32, 32), (0, 0, 255))]
    buffer = __import__("io").BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    [ref] = await load_references(data_uri(buffer.getvalue(), "gif"), ReferencePolicy())
    r, _, b = ref.image.getpixel((10, 10))  # type: ignore[misc]
    assert r > 200 and b < 50


async def test_exif_orientation_is_applied() -> None:
    image = solid((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    [ref] = await load_references(data_uri(encode(image, "jpeg", exif=exif), "jpeg"), ReferencePolicy())
    assert (ref.width, ref.height) == (20, 40)


async def test_alpha_is_flattened_on_white() -> None:
    image = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    [ref] = await load_references(data_uri(encode(image, "png"), "png"), ReferencePolicy())
    assert ref.image.mode == "RGB" and ref.image.getpixel((3, 3)) == (255, 255, 255)


async def test_truncated_jpeg_is_refused() -> None:
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "jpeg")
    message = await refused(data_uri(data[: len(data) // 2], "jpeg"))
    assert "truncated or corrupt" in message


# ------------------------------------------------------------------------------------------------
# Strict: the data must fill the image its header announces


async def test_png_header_larger_than_its_data_is_refused() -> None:
    short = png_with_rows(6000, 6000, 16)  # a complete zlib stream of 16 rows under a 6000x6000 header
    assert len(short) < 10_000
    message = await refused(data_uri(short, "png"))
    assert message.startswith("image[0]: png image data ends after 288016 of 108006000 bytes")
    assert "does not fill its 6000x6000 header" in message
    [ref] = await load_references(data_uri(png_with_rows(200, 16, 16), "png"), ReferencePolicy())
    assert ref.image.size == (200, 16)


async def test_truncated_png_is_refused() -> None:
    data = noise((256, 256), "png")
    for cut in (len(data) // 2, len(data) - 100):
        assert "truncated or corrupt" in await refused(data_uri(data[:cut], "png"))


def _interlaced_png(image: Image.Image) -> bytes:
    """``image`` (RGB) as an Adam7-interlaced PNG (Pillow writes none), filter type 0."""
    width, height = image.size
    rows = b""
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ):
        if x0 >= width:
            continue
        for y in range(y0, height, dy):
            rows += b"\x00" + b"".join(bytes(image.getpixel((x, y))) for x in range(x0, width, dx))  # type: ignore[arg-type]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (9, 2), (15, 15), (37, 23)])
def test_interlaced_png_fills_its_header(size: tuple[int, int]) -> None:
    image = Image.effect_noise(size, 64).convert("RGB")
    data = _interlaced_png(image)
    check_png_data(data)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.info.get("interlace") == 1
        assert decoded.convert("RGB").tobytes() == image.tobytes()
    with pytest.raises(ReferenceRejected, match="does not fill"):
        check_png_data(data[:8] + data[8:33] + _idat_of(data)[:-1])


def _idat_of(data: bytes) -> bytes:
    """The IDAT chunk of a one-IDAT PNG, with its zlib stream re-compressed one byte short."""
    (length,) = struct.unpack_from(">I", data, 33)
    raw = zlib.decompress(data[41 : 41 + length])[:-1]
    body = zlib.compress(raw)
    return struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body)) + b"\x00"


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "P2", "P4", "RGB", "RGBA", "I;16"])
def test_every_png_mode_fills_its_header(mode: str) -> None:
    image = Image.effect_noise((33, 17), 64).convert("L")
    image = image.quantize(int(mode[1:]) ** 2) if mode in ("P2", "P4") else image.convert(mode)  # 2- and 4-bit
    data = encode(image, "png")
    check_png_data(data)
    assert decode_reference(data, "png", None).size == (33, 17)


# ------------------------------------------------------------------------------------------------
# Downscaled to a pixel budget


@pytest.mark.parametrize(
    ("size", "max_pixels", "expected"),
    [
        ((4000, 3000), None, (4000, 3000)),
        ((4000, 3000), 12_000_000, (4000, 3000)),
        ((4000, 3000), 120_000, (400, 300)),
        ((6000, 6000), 1_000_000, (1000, 1000)),
        ((3000, 4000), 120_000, (300, 400)),
        ((16, 256), 100, (2, 40)),
        ((999, 1001), 1, (1, 1)),
    ],
)
def test_target_size(size: tuple[int, int], max_pixels: int | None, expected: tuple[int, int]) -> None:
    width, height = target_size(*size, max_pixels)
    assert (width, height) == expected
    assert max_pixels is None or width * height <= max_pixels
    assert target_size(size[1], size[0], max_pixels) == (height, width)  # symmetric: EXIF rotation is moot


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "gif"])
def test_decode_downscales_to_the_budget(fmt: str) -> None:
    data = encode(Image.linear_gradient("L").resize((1200, 900)).convert("RGB"), fmt)
    ref = FetchedReference(0, data, fmt, 1200, 900)  # type: ignore[arg-type]
    image = decode_reference(ref.data, ref.format, 120_000)
    assert image.mode == "RGB" and image.size == (400, 300)
    assert decoded_pixels(ref, 120_000) == 120_000 == image.width * image.height
    assert decoded_pixels(ref, None) == 1200 * 900
    left, right = image.getpixel((5, 150)), image.getpixel((395, 150))  # the gradient survives resizing
    assert left == right


def test_jpeg_is_decoded_small_with_dct_scaling() -> None:
    side = 6000
    data = encode(solid((side, side), (90, 140, 200)), "jpeg", progressive=True)
    with Image.open(io.BytesIO(data)) as opened:  # what decode_reference asks of Pillow
        opened.draft(opened.mode, target_size(side, side, 500_000))
        assert opened.size == (750, 750)  # 1/8 scale: 0.56 MP decoded instead of 36 MP
    image = decode_reference(data, "jpeg", 500_000)
    assert image.size == (707, 707)
    r, g, b = image.getpixel((300, 300))  # type: ignore[misc]
    assert abs(r - 90) < 8 and abs(g - 140) < 8 and abs(b - 200) < 8


async def test_exif_rotation_with_a_budget() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(solid((400, 100)), "jpeg", exif=exif)
    [ref] = await load_references(data_uri(data, "jpeg"), ReferencePolicy(), max_pixels=10_000)
    assert (ref.width, ref.height) == ref.image.size == (50, 200)
