"""Tests for seedream_server.postprocess: resize, watermark, font asset, encoding (the labels it embeds are
tested in test_provenance.py)."""

from __future__ import annotations

import io
from importlib import resources

import pytest
from PIL import Image, ImageChops, ImageFont, ImageStat

from image_support import FORMATS
from image_support import gradient as _gradient
from image_support import provenance_label as _prov
from seedream_server.postprocess import DEFAULT_FONT_RESOURCE, add_watermark, encode_image, resize_to
from seedream_server.provenance import read_provenance


def _max_diff(a: Image.Image, b: Image.Image) -> int:
    extrema = ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getextrema()
    return max(hi for _lo, hi in extrema)  # type: ignore[misc]


# --- resize ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ((2048, 2048), (1024, 1024)),  # downscale, same aspect
        ((1024, 1024), (1312, 736)),  # aspect change (square -> 16:9), up/down mixed
        ((1024, 1024), (736, 1312)),  # aspect change (square -> 9:16)
        ((512, 384), (2304, 1728)),  # upscale, same aspect
        ((640, 480), (4096, 4096)),  # upscale with aspect change
        ((1001, 777), (1000, 777)),  # off by one
    ],
)
def test_resize_exact_size(src: tuple[int, int], dst: tuple[int, int]) -> None:
    out = resize_to(_gradient(*src), *dst)
    assert out.size == dst
    assert out.mode == "RGB"


def test_resize_same_size_rgb_returns_same_object() -> None:
    im = _gradient(64, 48)
    assert resize_to(im, 64, 48) is im


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA"])
def test_resize_converts_to_rgb(mode: str) -> None:
    im = _gradient(64, 48).convert(mode)
    for size in [(64, 48), (32, 32)]:
        out = resize_to(im, *size)
        assert out.mode == "RGB"
        assert out.size == size


def test_resize_transparent_flattens_onto_white() -> None:
    out = resize_to(Image.new("RGBA", (40, 40), (255, 0, 0, 0)), 20, 20)
    assert out.getpixel((10, 10)) == (255, 255, 255)


def test_resize_cover_crops_centre_horizontally() -> None:
    # Three equal vertical bands; a square target keeps only the centre band.
    im = Image.new("RGB", (300, 100), (255, 0, 0))
    im.paste((0, 255, 0), (100, 0, 200, 100))
    im.paste((0, 0, 255), (200, 0, 300, 100))
    for size in [(50, 50), (100, 100), (400, 400)]:
        out = resize_to(im, *size)
        assert out.size == size
        r, g, b = ImageStat.Stat(out.crop((2, 2, size[0] - 2, size[1] - 2))).mean
        assert g > 250 and r < 5 and b < 5


def test_resize_cover_crops_centre_vertically() -> None:
    im = Image.new("RGB", (100, 300), (255, 0, 0))
    im.paste((0, 255, 0), (0, 100, 100, 200))
    im.paste((0, 0, 255), (0, 200, 100, 300))
    out = resize_to(im, 160, 160)
    r, g, b = ImageStat.Stat(out.crop((3, 3, 157, 157))).mean
    assert g > 250 and r < 5 and b < 5


def test_resize_does_not_distort() -> None:
    # A centred square stays a square when the aspect ratio changes (cover crop, no stretch).
    im = Image.new("RGB", (400, 400), (0, 0, 0))
    im.paste((255, 255, 255), (150, 150, 250, 250))
    out = resize_to(im, 400, 200).convert("L").point(lambda v: 255 if v > 127 else 0)
    left, top, right, bottom = out.getbbox() or (0, 0, 0, 0)
    assert abs((right - left) - (bottom - top)) <= 2
    assert abs((left + right) / 2 - 200) <= 1 and abs((top + bottom) / 2 - 100) <= 1


def test_resize_rejects_bad_size() -> None:
    with pytest.raises(ValueError):
        resize_to(_gradient(10, 10), 0, 10)
    with pytest.raises(ValueError):
        resize_to(_gradient(10, 10), 10, -1)


# --- watermark ------------------------------------------------------------------------------


def test_watermark_changes_bottom_right_only() -> None:
    im = _gradient(1024, 768)
    marked = add_watermark(im)
    assert marked is not im
    assert marked.size == im.size and marked.mode == "RGB"
    w, h = im.size
    corner = (int(w * 0.75), int(h * 0.85), w, h)
    assert _max_diff(marked.crop(corner), im.crop(corner)) > 100
    assert _max_diff(marked.crop((0, 0, w // 2, h // 2)), im.crop((0, 0, w // 2, h // 2))) == 0
    # The input is left untouched.
    assert _max_diff(im, _gradient(1024, 768)) == 0


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0)])
def test_watermark_legible_on_white_and_black(background: tuple[int, int, int]) -> None:
    im = Image.new("RGB", (1024, 1024), background)
    marked = add_watermark(im)
    corner = marked.crop((700, 900, 1024, 1024))
    diff = ImageChops.difference(corner, Image.new("RGB", corner.size, background)).convert("L")
    # Enough strongly contrasting pixels to read the text: >= 200 levels away from the background.
    strong = sum(diff.point(lambda v: 255 if v >= 200 else 0).histogram()[255:])
    assert strong > 300, strong
    # ...and the mark is not a solid block: the corner keeps plenty of background.
    untouched = diff.histogram()[0]
    assert untouched > corner.width * corner.height // 3


def test_watermark_scales_with_image() -> None:
    def marked_height(size: int) -> int:
        im = Image.new("RGB", (size, size), (128, 128, 128))
        diff = ImageChops.difference(add_watermark(im), im).convert("L")
        box = diff.point(lambda v: 255 if v > 60 else 0).getbbox()
        assert box is not None
        assert box[2] <= size and box[3] <= size  # stays inside with a margin
        assert box[2] < size - 2 and box[3] < size - 2
        return box[3] - box[1]

    small, large = marked_height(512), marked_height(4096)
    assert 10 <= small <= 40
    assert 7 * small <= large <= 9 * small


def test_watermark_min_size_and_long_text_on_tiny_image() -> None:
    tiny = Image.new("RGB", (64, 48), (0, 0, 0))
    out = add_watermark(tiny, "生成式人工智能 AI生成 预览引擎 非真实模型图像")
    assert out.size == (64, 48)
    assert _max_diff(out, tiny) > 0


def test_watermark_empty_text_is_a_copy() -> None:
    im = _gradient(200, 100)
    out = add_watermark(im, "  ")
    assert out is not im and _max_diff(out, im) == 0


def test_watermark_custom_text_and_modes() -> None:
    im = _gradient(800, 600)
    a = add_watermark(im, "预览引擎，非真实模型图像")
    b = add_watermark(im)
    assert _max_diff(a, b) > 0
    rgba = add_watermark(im.convert("RGBA"))
    assert rgba.mode == "RGBA"
    assert add_watermark(im.convert("L")).mode == "RGB"


def test_watermark_with_font_path() -> None:
    with resources.as_file(resources.files("seedream_server").joinpath(DEFAULT_FONT_RESOURCE)) as path:
        out = add_watermark(_gradient(640, 480), font_path=str(path))
    assert _max_diff(out, add_watermark(_gradient(640, 480))) == 0


# --- font asset -----------------------------------------------------------------------------


def test_font_asset_and_licence_ship_in_package() -> None:
    fonts = resources.files("seedream_server").joinpath("assets", "fonts")
    font = resources.files("seedream_server").joinpath(DEFAULT_FONT_RESOURCE)
    assert font.is_file()
    data = font.read_bytes()
    assert data[:4] in (b"OTTO", b"\x00\x01\x00\x00")
    assert 10_000 < len(data) < 300 * 1024
    licence = fonts.joinpath("OFL.txt").read_text(encoding="utf-8")
    assert "SIL OPEN FONT LICENSE Version 1.1" in licence
    assert "Adobe" in licence


def test_font_covers_builtin_texts() -> None:
    data = resources.files("seedream_server").joinpath(DEFAULT_FONT_RESOURCE).read_bytes()
    font = ImageFont.truetype(io.BytesIO(data), 48)
    assert (font.getname()[0] or "").startswith("Noto Sans CJK")

    def glyph(ch: str) -> bytes:
        return bytes(font.getmask(ch))

    missing = glyph("\u9fa5")  # a rare ideograph that is not in the subset: renders .notdef
    for ch in "AI生成预览引擎非真实模型图像生成式人工智能，。：、（）Az09":
        assert glyph(ch) != missing, ch


# --- encoding -------------------------------------------------------------------------------


def test_jpeg_output_is_jpeg_of_right_size() -> None:
    data = encode_image(_gradient(1312, 736), provenance=_prov())
    assert data[:2] == b"\xff\xd8"
    assert data[-2:] == b"\xff\xd9"
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.format == "JPEG" and im.size == (1312, 736) and im.mode == "RGB"


def test_jpeg_flattens_alpha_and_png_keeps_it() -> None:
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 128))
    with Image.open(io.BytesIO(encode_image(rgba, provenance=_prov()))) as im:
        assert im.mode == "RGB"
    with Image.open(io.BytesIO(encode_image(rgba, provenance=_prov(), output_format="png"))) as im:
        assert im.mode == "RGBA"


@pytest.mark.parametrize("fmt", FORMATS)
def test_encoding_is_deterministic(fmt: str) -> None:
    prov = _prov()
    a = encode_image(add_watermark(_gradient(640, 480)), provenance=prov, output_format=fmt)
    b = encode_image(add_watermark(_gradient(640, 480)), provenance=_prov(), output_format=fmt)
    assert a == b
    # Metadata carried by the source image does not leak into the output.
    im = _gradient(640, 480)
    im.info["icc_profile"] = b"junk"
    im.info["comment"] = b"hello"
    c = encode_image(add_watermark(im), provenance=prov, output_format=fmt)
    assert c == a
    assert "icc_profile" in im.info  # the caller's image is not modified


def test_quality_changes_jpeg_size() -> None:
    im = _gradient(512, 512)
    low = encode_image(im, provenance=_prov(), quality=20)
    high = encode_image(im, provenance=_prov(), quality=95)
    assert len(low) < len(high)


def test_encode_rejects_bad_arguments() -> None:
    im = _gradient(16, 16)
    with pytest.raises(ValueError):
        encode_image(im, provenance=_prov(), output_format="gif")
    with pytest.raises(ValueError):
        encode_image(im, provenance=_prov(), quality=0)
    assert encode_image(im, provenance=_prov(), output_format="JPG")[:2] == b"\xff\xd8"


def test_4096_watermark_and_encode() -> None:
    big = Image.effect_noise((4096, 4096), 40).convert("RGB")
    marked = add_watermark(big)
    assert _max_diff(marked.crop((0, 0, 2048, 2048)), big.crop((0, 0, 2048, 2048))) == 0
    data = encode_image(marked, provenance=_prov("big"))
    assert data[:2] == b"\xff\xd8"
    assert read_provenance(data)["ProduceID"] == "big"
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (4096, 4096)
