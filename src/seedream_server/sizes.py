"""Output-size resolution (SPEC §3): presets by aspect ratio, explicit ``WxH`` bounds, and usage tokens.

Pure functions, no I/O. A preset's ratio comes, in order, from an explicit ratio or orientation word in
the prompt, else from the first reference image, else 1:1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import InvalidParameter

PRESETS: dict[str, dict[str, tuple[int, int]]] = {
    "1:1": {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)},
    "4:3": {"1K": (1152, 864), "2K": (2304, 1728), "4K": (4704, 3520)},
    "3:4": {"1K": (864, 1152), "2K": (1728, 2304), "4K": (3520, 4704)},
    "16:9": {"1K": (1312, 736), "2K": (2848, 1600), "4K": (5504, 3040)},
    "9:16": {"1K": (736, 1312), "2K": (1600, 2848), "4K": (3040, 5504)},
    "3:2": {"1K": (1248, 832), "2K": (2496, 1664), "4K": (4992, 3328)},
    "2:3": {"1K": (832, 1248), "2K": (1664, 2496), "4K": (3328, 4992)},
    "21:9": {"1K": (1568, 672), "2K": (3136, 1344), "4K": (6240, 2656)},
}
PRESET_NAMES = ("1K", "2K", "4K")
DEFAULT_SIZE = "2048x2048"
SIZE_MULTIPLE = 16  # sides of derived tiers are multiples of this
#: pixel budgets of the tiers without a published table (Seedream 5.0): 1.5K = 1536², 3K = 3072²
DERIVED_TIER_PIXELS = {"1.5K": 1536 * 1536, "3K": 3072 * 3072}

_RATIO_VALUES = {name: int(name.split(":")[0]) / int(name.split(":")[1]) for name in PRESETS}


def _reduced(width: int, height: int) -> tuple[int, int]:
    g = math.gcd(width, height)
    return width // g, height // g


# table ratios by their lowest terms: "21:9" is 7:3, so "21:9" and "14:6" in a prompt both find it
_BY_REDUCED = {_reduced(*(int(x) for x in name.split(":"))): name for name in PRESETS}

# \Z, not $: "$" would also match before a trailing newline ("2048x2048\n")
_EXPLICIT = re.compile(r"^([1-9][0-9]{0,5})x([1-9][0-9]{0,5})\Z")
# "16:9", "16：9", "16比9" — two small integers without leading zeros, not part of a longer number or a
# time like 10:30:00 or 16:09
_RATIO_IN_PROMPT = re.compile(r"(?<![\d.:：])([1-9]\d?)\s*(?:[:：]|比)\s*([1-9]\d?)(?![\d.:：])")
# order matters: the first matching group wins
_ORIENTATION_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("21:9", re.compile(r"超宽屏|宽银幕|电影宽幅|\bultra[- ]?wide\b|\bcinemascope\b", re.I)),
    (
        "9:16",
        re.compile(r"竖屏|手机壁纸|\bvertical\b|\bportrait (?:orientation|format|mode)\b|\bphone wallpaper\b", re.I),
    ),
    ("3:4", re.compile(r"竖版|竖图|竖幅|竖构图|\bportrait[- ]oriented\b|\btall format\b", re.I)),
    (
        "16:9",
        re.compile(r"横屏|宽屏|\bwidescreen\b|\blandscape (?:orientation|format|mode)\b|\bdesktop wallpaper\b", re.I),
    ),
    ("4:3", re.compile(r"横版|横图|横幅|横构图|\blandscape[- ]oriented\b", re.I)),
    ("1:1", re.compile(r"正方形|(?<!长)方形|方图|\bsquare (?:format|image|picture|aspect|composition)\b", re.I)),
)


@dataclass(frozen=True)
class SizeLimits:
    """The size tiers a model offers and the pixel and ratio range it accepts for explicit sizes."""

    min_pixels: int = 921_600
    max_pixels: int = 16_777_216
    min_ratio: float = 1 / 16
    max_ratio: float = 16.0
    tiers: tuple[str, ...] = PRESET_NAMES


def _derived(pixels: int, ratio: str) -> tuple[int, int]:
    """A tier's size at a table ratio from its pixel budget, sides multiples of SIZE_MULTIPLE."""
    height = math.sqrt(pixels / _RATIO_VALUES[ratio])
    width = height * _RATIO_VALUES[ratio]
    return round(width / SIZE_MULTIPLE) * SIZE_MULTIPLE, round(height / SIZE_MULTIPLE) * SIZE_MULTIPLE


#: every tier's size per ratio: the published 1K/2K/4K table, and the derived 1.5K and 3K
TIER_SIZES: dict[str, dict[str, tuple[int, int]]] = {
    ratio: {**sizes, **{tier: _derived(pixels, ratio) for tier, pixels in DERIVED_TIER_PIXELS.items()}}
    for ratio, sizes in PRESETS.items()
}
ALL_TIERS = ("1K", "1.5K", "2K", "3K", "4K")


def ratio_from_prompt(prompt: str) -> str | None:
    """The table ratio named in the prompt ("16:9", "竖屏", "widescreen", ...), or None."""
    for match in _RATIO_IN_PROMPT.finditer(prompt):
        name = _BY_REDUCED.get(_reduced(int(match.group(1)), int(match.group(2))))
        if name is not None:
            return name
    for name, pattern in _ORIENTATION_WORDS:
        if pattern.search(prompt):
            return name
    return None


def nearest_ratio(width: int, height: int) -> str:
    """The table ratio nearest to width/height by |log ratio|."""
    target = math.log(width / height)
    return min(PRESETS, key=lambda name: abs(math.log(_RATIO_VALUES[name]) - target))


def dimensions(size: object) -> tuple[int, int] | None:
    """``"2048x2048"`` -> (2048, 2048); None for anything that is not ``<W>x<H>``."""
    match = _EXPLICIT.match(size) if isinstance(size, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_size(size: str, limits: SizeLimits, model: str = "") -> tuple[int, int] | str:
    """Validate ``size``: returns a tier name ("2K") or an explicit (width, height). ``model`` names the
    model in the messages."""
    if size in limits.tiers:
        return size
    of_model = f" for model {model}" if model else ""
    if size in ALL_TIERS:
        raise InvalidParameter(
            f"The parameter `size` specified in the request is not valid{of_model}: {size!r} is not one of its "
            f"size tiers ({', '.join(limits.tiers)}).",
            param="size",
        )
    explicit = dimensions(size)
    if explicit is None:
        raise InvalidParameter(
            f"The parameter `size` specified in the request is not valid{of_model}: {size[:64]!r}. "
            f"Use {', '.join(limits.tiers)} or <width>x<height> such as 2048x2048.",
            param="size",
        )
    width, height = explicit
    pixels = width * height
    if not limits.min_pixels <= pixels <= limits.max_pixels:
        raise InvalidParameter(
            f"The parameter `size` specified in the request is not valid{of_model}: {size} has {pixels} pixels; "
            f"width x height must be within [{limits.min_pixels}, {limits.max_pixels}].",
            param="size",
        )
    ratio = width / height
    if not limits.min_ratio <= ratio <= limits.max_ratio:
        raise InvalidParameter(
            f"The parameter `size` specified in the request is not valid{of_model}: {size} has aspect ratio "
            f"{ratio:.6g}; width / height must be within [1/16, 16].",
            param="size",
        )
    return width, height


def resolve_size(
    size: str,
    prompt: str,
    limits: SizeLimits,
    first_reference: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """The delivered (width, height) for a request (SPEC §3): :func:`parse_size` then :func:`delivered_size`."""
    return delivered_size(parse_size(size, limits), prompt, first_reference)


def delivered_size(
    parsed: tuple[int, int] | str, prompt: str, first_reference: tuple[int, int] | None = None
) -> tuple[int, int]:
    """The (width, height) of a size :func:`parse_size` accepted: explicit as given, a preset by ratio."""
    if isinstance(parsed, tuple):
        return parsed
    ratio = ratio_from_prompt(prompt)
    if ratio is None and first_reference is not None:
        ratio = nearest_ratio(*first_reference)
    return TIER_SIZES[ratio or "1:1"][parsed]


def image_tokens(width: int, height: int) -> int:
    """Usage tokens of one delivered image: w·h/256 (1760x2368 -> 16280)."""
    return (width * height) // 256
