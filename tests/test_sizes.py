"""Tests for seedream_server.sizes (SPEC §3 and the usage arithmetic of §6): pure functions, no server."""

from __future__ import annotations

import math

import pytest

from seedream_server.errors import InvalidParameter
from seedream_server.sizes import (
    DEFAULT_SIZE,
    PRESETS,
    SizeLimits,
    image_tokens,
    nearest_ratio,
    parse_size,
    ratio_from_prompt,
    resolve_size,
)

LIMITS = SizeLimits()

# SPEC §3, copied by hand so the table in the code is checked against the spec, not against itself.
SPEC_TABLE: dict[str, dict[str, tuple[int, int]]] = {
    "1:1": {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)},
    "4:3": {"1K": (1152, 864), "2K": (2304, 1728), "4K": (4704, 3520)},
    "3:4": {"1K": (864, 1152), "2K": (1728, 2304), "4K": (3520, 4704)},
    "16:9": {"1K": (1312, 736), "2K": (2848, 1600), "4K": (5504, 3040)},
    "9:16": {"1K": (736, 1312), "2K": (1600, 2848), "4K": (3040, 5504)},
    "3:2": {"1K": (1248, 832), "2K": (2496, 1664), "4K": (4992, 3328)},
    "2:3": {"1K": (832, 1248), "2K": (1664, 2496), "4K": (3328, 4992)},
    "21:9": {"1K": (1568, 672), "2K": (3136, 1344), "4K": (6240, 2656)},
}
PRESET_CASES = [(ratio, preset, dims) for ratio, row in SPEC_TABLE.items() for preset, dims in row.items()]


# --- invalid forms ------------------------------------------------------------------------------

INVALID_FORMS = [
    "",
    " ",
    "abc",
    "2048",
    "2048x",
    "x2048",
    "x",
    "0x0",
    "0x2048",
    "2048x0",
    "-1024x1024",
    "1024x-1024",
    "+1024x1024",
    "1024.5x1024",
    "1024x1024.0",
    "1e3x1024",
    "2048 x 2048",
    "2048X2048",
    "2048×2048",  # multiplication sign
    "2048*2048",
    "2048,2048",
    "2048:2048",
    "3K",
    "8K",
    "0K",
    "2k",
    "1k",
    "4k",
    "2K ",
    " 2K",
    "2 K",
    "2048x2048 ",
    " 2048x2048",
    "2048x2048\n",
    "2048x2048\t",
    "02048x2048",
    "2048x02048",
    "2048x2048x2",
    "2048x2048px",
    "２０４８x２０４８",  # fullwidth digits
    "1" * 7 + "x2048",
    "2048x" + "9" * 7,
    "9" * 400 + "x" + "9" * 400,
    "0x" + "1" * 50,
    "auto",
    "None",
    "null",
]


@pytest.mark.parametrize("size", INVALID_FORMS)
def test_invalid_size_forms_are_refused_naming_size(size: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_size(size, LIMITS)
    assert info.value.param == "size"
    assert info.value.status == 400
    assert info.value.code == "InvalidParameter"


@pytest.mark.parametrize("size", ["2048 x 2048", "3K", "", "1024.5x1024"])
def test_invalid_size_message_quotes_the_value_and_the_accepted_forms(size: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_size(size, LIMITS)
    assert repr(size) in info.value.message
    assert "1K, 2K, 4K" in info.value.message


# --- pixel and ratio bounds ---------------------------------------------------------------------

VALID_EXPLICIT = [
    (1280, 720),  # 921,600: the lower bound exactly
    (720, 1280),
    (960, 960),  # 921,600 as a square
    (4096, 4096),  # 16,777,216: the upper bound exactly
    (8192, 2048),  # upper bound, ratio 4
    (1024, 1024),  # every size of the seed page's narrower range is allowed too
    (1760, 2368),
    (3840, 240),  # 921,600 px and ratio exactly 16
    (240, 3840),  # ratio exactly 1/16
    (16384, 1024),  # both upper bounds at once: 16,777,216 px and ratio 16
    (1024, 16384),
    (4000, 250),  # ratio 16, 1,000,000 px
]


@pytest.mark.parametrize(("width", "height"), VALID_EXPLICIT)
def test_explicit_sizes_within_bounds_are_delivered_exactly(width: int, height: int) -> None:
    assert parse_size(f"{width}x{height}", LIMITS) == (width, height)
    assert resolve_size(f"{width}x{height}", "a 16:9 widescreen 竖屏 prompt", LIMITS, (100, 900)) == (width, height)


PIXELS_OUT = [
    (1279, 720),  # 920,880: one column short
    (1280, 719),
    (959, 960),
    (1024, 899),
    (4097, 4096),  # one column over
    (4096, 4097),
    (8193, 2048),
    (16385, 1024),
    (1, 1),
    (100, 100),
    (999999, 999999),
]


@pytest.mark.parametrize(("width", "height"), PIXELS_OUT)
def test_pixel_counts_outside_the_profile_are_refused(width: int, height: int) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_size(f"{width}x{height}", LIMITS)
    assert info.value.param == "size"
    assert str(width * height) in info.value.message
    assert "921600" in info.value.message and "16777216" in info.value.message


RATIO_OUT = [
    (3841, 240),  # 921,840 px (fine) but ratio 16.004
    (240, 3841),
    (4001, 250),
    (4100, 256),  # 1,049,600 px, ratio 16.02
    (16000, 999),  # 15,984,000 px, ratio 16.016
    (999, 16000),
]


@pytest.mark.parametrize(("width", "height"), RATIO_OUT)
def test_ratios_beyond_16_are_refused_even_when_pixels_fit(width: int, height: int) -> None:
    assert LIMITS.min_pixels <= width * height <= LIMITS.max_pixels  # only the ratio is wrong
    with pytest.raises(InvalidParameter) as info:
        parse_size(f"{width}x{height}", LIMITS)
    assert info.value.param == "size"
    assert "aspect ratio" in info.value.message


def test_limits_come_from_the_model_profile() -> None:
    narrow = SizeLimits(min_pixels=1024 * 1024, max_pixels=2048 * 2048, min_ratio=1 / 3, max_ratio=3)
    assert parse_size("1024x1024", narrow) == (1024, 1024)
    for size in ("1280x720", "4096x4096", "3072x1000"):
        with pytest.raises(InvalidParameter):
            parse_size(size, narrow)
    assert parse_size("1280x720", LIMITS) == (1280, 720)


# --- presets ------------------------------------------------------------------------------------


def test_preset_table_is_the_spec_table() -> None:
    assert PRESETS == SPEC_TABLE


@pytest.mark.parametrize(("ratio", "preset", "dims"), PRESET_CASES)
def test_every_preset_resolves_from_its_ratio_in_the_prompt(ratio: str, preset: str, dims: tuple[int, int]) -> None:
    assert parse_size(preset, LIMITS) == preset
    assert resolve_size(preset, f"a lighthouse at dusk, {ratio}", LIMITS) == dims


@pytest.mark.parametrize(("ratio", "preset", "dims"), PRESET_CASES)
def test_every_preset_resolves_from_the_first_reference(ratio: str, preset: str, dims: tuple[int, int]) -> None:
    w, h = (int(x) for x in ratio.split(":"))
    assert resolve_size(preset, "a lighthouse", LIMITS, (w * 97, h * 97)) == dims


@pytest.mark.parametrize(("ratio", "preset", "dims"), PRESET_CASES)
def test_every_preset_is_itself_a_valid_explicit_size(ratio: str, preset: str, dims: tuple[int, int]) -> None:
    width, height = dims
    assert parse_size(f"{width}x{height}", LIMITS) == dims
    assert width % 16 == 0 and height % 16 == 0
    w, h = (int(x) for x in ratio.split(":"))
    assert abs(math.log((width / height) / (w / h))) < 0.02  # the named ratio, give or take rounding


@pytest.mark.parametrize("preset", ["1K", "2K", "4K"])
def test_presets_default_to_square_without_ratio_or_reference(preset: str) -> None:
    assert resolve_size(preset, "a cat on a sofa", LIMITS) == SPEC_TABLE["1:1"][preset]


def test_default_size_is_2048_square() -> None:
    assert DEFAULT_SIZE == "2048x2048"
    assert parse_size(DEFAULT_SIZE, LIMITS) == (2048, 2048)


# --- ratio from the prompt ----------------------------------------------------------------------

PROMPT_RATIOS = [
    ("a city skyline, 16:9", "16:9"),
    ("poster 9:16", "9:16"),
    ("比例16：9的海报", "16:9"),  # fullwidth colon
    ("16比9 的画面", "16:9"),
    ("aspect 4:3", "4:3"),
    ("3:4 portrait photo", "3:4"),
    ("3:2 film frame", "3:2"),
    ("2:3", "2:3"),
    ("cinematic 21:9 shot", "21:9"),
    ("1:1 avatar", "1:1"),
    ("32:18 screenshot", "16:9"),  # reduced to the table ratio
    ("手机壁纸，竖屏", "9:16"),
    ("一张竖版海报", "3:4"),
    ("横版风景画", "4:3"),
    ("横屏游戏截图", "16:9"),
    ("a widescreen shot of the sea", "16:9"),
    ("A WIDESCREEN SHOT", "16:9"),
    ("vertical poster of a tower", "9:16"),
    ("in portrait orientation", "9:16"),
    ("landscape orientation, mountains", "16:9"),
    ("方形头像", "1:1"),
    ("正方形的图标", "1:1"),
    ("a square image of a cat", "1:1"),
    ("超宽屏的城市夜景", "21:9"),
    ("ultrawide desert", "21:9"),
    ("竖屏 16:9", "16:9"),  # an explicit ratio wins over a word
]


@pytest.mark.parametrize(("prompt", "ratio"), PROMPT_RATIOS)
def test_ratio_and_orientation_words_in_the_prompt(prompt: str, ratio: str) -> None:
    assert ratio_from_prompt(prompt) == ratio
    assert resolve_size("2K", prompt, LIMITS) == SPEC_TABLE[ratio]["2K"]


NO_RATIO = [
    "a portrait of a woman",
    "landscape painting of mountains",
    "a landscape with a river",
    "portrait photography, studio light",
    "meeting at 10:30",
    "the train leaves at 16:09",  # a time, not 16:9
    "lunch at 12:09",  # a time, not 4:3
    "timestamp 10:30:00",
    "version 1.16:9",
    "2:1 split",  # not a table ratio
    "0:0",
    "一个长方形的桌子",  # rectangle, not square
    "Times Square at night",
    "a cat on a sofa",
    "",
]


@pytest.mark.parametrize("prompt", NO_RATIO)
def test_prompts_that_do_not_name_a_ratio(prompt: str) -> None:
    assert ratio_from_prompt(prompt) is None
    assert resolve_size("2K", prompt, LIMITS) == (2048, 2048)


def test_prompt_ratio_wins_over_reference_ratio() -> None:
    assert resolve_size("1K", "9:16 poster", LIMITS, (1920, 1080)) == (736, 1312)
    assert resolve_size("1K", "a poster", LIMITS, (1920, 1080)) == (1312, 736)


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ((1920, 1080), "16:9"),
        ((1080, 1920), "9:16"),
        ((1000, 1000), "1:1"),
        ((1100, 1000), "1:1"),
        ((1300, 1000), "4:3"),
        ((1450, 1000), "3:2"),
        ((2560, 1080), "21:9"),
        ((5000, 1000), "21:9"),  # wider than any table ratio: the widest
        ((100, 1600), "9:16"),  # taller than any: the tallest
        ((600, 800), "3:4"),
        ((640, 960), "2:3"),
    ],
)
def test_nearest_ratio_by_log_distance(size: tuple[int, int], ratio: str) -> None:
    assert nearest_ratio(*size) == ratio


# --- usage arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        (1760, 2368, 16280),  # SPEC §6's example
        (2048, 2048, 16384),
        (1024, 1024, 4096),
        (4096, 4096, 65536),
        (1280, 720, 3600),
        (2848, 1600, 17800),
        (6240, 2656, 64740),
    ],
)
def test_image_tokens_is_pixels_over_256(width: int, height: int, tokens: int) -> None:
    assert image_tokens(width, height) == tokens
    assert isinstance(image_tokens(width, height), int)
