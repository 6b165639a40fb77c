"""Reading numbers and counts: Chinese and English numerals, the explicit image count of a prompt
("生成3张", "四格漫画", "4 images", "a set of four"), and whether it holds a series word ("一组",
"storyboard"). Pure functions over folded text; the patterns are in :mod:`.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from . import rules

_DECIMAL_BASE: Final = 10
_CN_RANGE_LEN: Final = 2  # "两三张": two adjacent digits name a range, read as its upper bound


def is_chinese(text: str) -> bool:
    """Whether the prompt is mainly Chinese (decides the separator of per-image prompts)."""
    cjk = len(rules.CJK_RE.findall(text))
    return cjk > 0 and cjk >= len(rules.EN_WORD_RE.findall(text))


def cn_int(token: str) -> int | None:
    """A Chinese numeral ("三", "两", "十二", "二十") as an int; ranges ("三四") read as the upper bound."""
    if token.isdigit():
        return int(token)
    if rules.CN_TEN in token:
        left, _, right = token.partition(rules.CN_TEN)
        if len(left) > 1 or len(right) > 1 or rules.CN_TEN in right:
            return None
        tens = rules.CN_DIGITS.get(left, -1) if left else 1
        ones = rules.CN_DIGITS.get(right, -1) if right else 0
        if tens < 1 or ones < 0:
            return None
        return tens * _DECIMAL_BASE + ones
    if len(token) == 1:
        return rules.CN_DIGITS.get(token)
    if len(token) == _CN_RANGE_LEN and all(c in rules.CN_DIGITS for c in token):
        return max(rules.CN_DIGITS[c] for c in token)
    return None


def en_int(token: str) -> int | None:
    """An English number ("4", "four", "a dozen") as an int, or None."""
    token = " ".join(token.lower().split())
    if token.isdigit():
        return int(token)
    return rules.EN_NUMBERS.get(token)


@dataclass(frozen=True)
class Count:
    """An explicit number of images found at ``start``; ``strong`` counts (张/幅/images) beat weak
    ones (款/个版本/versions) when both appear."""

    value: int
    start: int
    strong: bool


def _cn_counts(text: str) -> list[Count]:
    found: list[Count] = []
    for rule in rules.CN_COUNT_RULES:
        for m in rule.pattern.finditer(text):
            value = cn_int(m["n"])
            if value is None or not 1 <= value <= rules.MAX_COUNT:
                continue
            if "组" in m[0] and value < rules.MIN_GROUP_COUNT:  # "一组图" is a series word, not a count of one
                continue
            if value == 1 and rules.PER_EACH_CN.search(text, 0, m.start()):  # "每个季节一张"
                continue
            found.append(Count(value, m.start(), rule.strong))
    return found


def _en_counts(text: str) -> list[Count]:
    found: list[Count] = []
    for rule in rules.EN_COUNT_RULES:
        for m in rule.pattern.finditer(text):
            value = en_int(m["n"])
            if value is None or not 1 <= value <= rules.MAX_COUNT:
                continue
            if value == 1 and rules.PER_EACH_EN.match(text, m.end()):  # "one image for each season"
                continue
            noun = (m.groupdict().get("noun") or "").lower()
            weak_noun = noun.startswith(rules.EN_WEAK_NOUN_PREFIXES)
            found.append(Count(value, m.start(), rule.strong and not weak_noun))
    for m in rules.EN_GRID.finditer(text):
        found.append(Count(int(m["a"]) * int(m["b"]), m.start(), True))
    for m in rules.EN_PTYCH.finditer(text):
        found.append(Count(rules.PTYCH_PANELS[m["w"].lower()], m.start(), True))
    return found


def explicit_count(text: str) -> Count | None:
    """The first explicit image count (strong classifiers first), or None."""
    found = _cn_counts(text) + _en_counts(text)
    if not found:
        return None
    preferred = [c for c in found if c.strong] or found
    return min(preferred, key=lambda c: c.start)


def has_series_word(text: str) -> bool:
    """Whether the prompt names a series ("一组", "分镜", "storyboard", "variations") without a number."""
    return any(p.search(text) for p in rules.SERIES_PATTERNS)
