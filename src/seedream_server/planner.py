"""Group planning for ``sequential_image_generation: "auto"``: how many images, and each one's prompt.

This module owns one decision (SPEC §5): given a prompt and the already-combined cap
(``min(max_images, 15 - len(references))``), how many images does the user want, and what should
each image's own prompt be? It has two halves:

* :func:`plan_group` -- pure, deterministic rules for Chinese and English prompts, no I/O:

  1. explicit counts: "生成3张", "三幅", "两张", "四格漫画", "九宫格", "4 images", "four pictures",
     "a set of four", "a 4-panel comic". Only numbers attached to an image word count
     ("two cats" is one image of two cats; "3D", "2K", "16:9", dates, prices, ages, "第一" never
     count);
  2. enumerations: "涵盖早晨、中午、晚上", "分别是春、夏、秋、冬", "：A、B、C", "1. … 2. …",
     "第一张…第二张…", "in the morning, noon and night", ": a, b and c";
  3. series words with a default count: "一组", "系列图", "分镜", "组图", "连环画",
     "storyboard", "a series of images", "variations";
  4. otherwise one image, with the prompt unchanged.

  When a count and an enumeration both appear the count decides the number and the enumeration
  gives each image its variant (cycled, then numbered, when there are fewer variants than images).

* :class:`Planner`, the plug point the service calls, with :class:`RulePlanner` (the rules
  above) and :class:`LLMPlanner` (any OpenAI-compatible chat endpoint, falling back to the rules on
  any failure).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Final

import httpx

__all__ = [
    "DEFAULT_SERIES_COUNT",
    "MAX_GROUP_IMAGES",
    "GroupPlan",
    "LLMPlanner",
    "Planner",
    "RulePlanner",
    "plan_group",
]

logger = logging.getLogger(__name__)

MAX_GROUP_IMAGES: Final = 15
"""The most images one request may produce (references included), per the Seedream 4.0 API."""

DEFAULT_SERIES_COUNT: Final = 4
"""Images planned for a series word ("一组", "storyboard") that comes without a number."""


@dataclass(frozen=True)
class GroupPlan:
    """The images a request will produce: one prompt per image, in order, and why (for logs)."""

    prompts: tuple[str, ...]
    reason: str = "single"

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("a GroupPlan needs at least one prompt")

    @property
    def count(self) -> int:
        """The number of images planned."""
        return len(self.prompts)


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------

# Full-width ASCII (，：；！？（）０-９Ａ-Ｚ) and the ideographic space fold to ASCII one character for
# one character, so offsets found in the folded text are offsets in the original prompt.
_FOLD: Final = str.maketrans({chr(0xFF01 + i): chr(0x21 + i) for i in range(94)} | {"\u3000": " "})

_CJK_RE: Final = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_EN_WORD_RE: Final = re.compile(r"[A-Za-z]+")

_CN_DIGITS: Final[dict[str, int]] = {
    "零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4,
    "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
}  # fmt: skip
_CN_NUM: Final = r"[零〇一二两三四五六七八九十]{1,3}"
_NUM: Final = rf"(?:\d{{1,2}}|{_CN_NUM})"
# What may not stand right before a Chinese count: digits, decimals, ordinals ("第一"), "每一",
# "同一", "这一", "几", "各一" ... and other numerals (so "十二张" is never read as "二张").
_CN_BEFORE: Final = r"(?<![\d.第每同这那哪另单几各零〇一二两三四五六七八九十百千万])"

_EN_NUMBERS: Final[dict[str, int]] = {
    "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "twenty": 20, "a couple of": 2, "a pair of": 2, "a trio of": 3,
    "a dozen": 12,
}  # fmt: skip
_EN_NUM: Final = r"(?:\d{1,2}|" + "|".join(sorted(_EN_NUMBERS, key=len, reverse=True)) + ")"

# Nouns that name an image: a number in front of one of these is a number of images.
_EN_IMAGE_NOUN: Final = (
    r"(?:images?|pictures?|pics?|photos?|photographs?|illustrations?|panels?|frames?|shots?"
    r"|snapshots?|stills?|drawings?|paintings?|sketch(?:es)?|renders?|renderings?|artworks?"
    r"|wallpapers?|posters?|stickers?|portraits?|headshots?|scenes?|slides?|graphics?|visuals?"
    r"|banners?|thumbnails?|covers?|mockups?|comics?|avatars?|variations?|variants?|versions?"
    r"|designs?|alternatives?|concepts?|landscapes?|cityscapes?|seascapes?|watercolou?rs?|postcards?|prints?)"
)
# Words of a group that are not images themselves ("a series of scenes", "from different angles").
_EN_GROUP_NOUN: Final = r"(?:scenes|moments|stages|steps|events|angles|views|seasons|poses|expressions)"
_EN_STOP: Final = (
    r"(?:in|on|at|of|with|and|or|the|a|an|to|for|from|by|into|onto|under|over|is|are|was|were|be"
    r"|that|which|who|while|each|per|as|this|these|those|its|their|his|her|during|near|beside"
    r"|behind|above|below|then|but|so|than|like|about|after|before|around|through|across)"
)
# A word allowed between a number and its noun ("4 different images", "three cute cat stickers"):
# not a stop word and not a plural ("two cats in pictures" does not count).
_EN_FILLER: Final = rf"(?!{_EN_STOP}\b)[a-z][a-z'-]*(?<![^su]s)"

# Chinese image words; a number before 张/幅 counts unless a non-image object follows.
_CN_IMAGE_NOUN: Final = (
    r"(?:图片|图|照片|相片|海报|插画|插图|画面|画|壁纸|头像|表情包|表情|贴纸|漫画|素材|效果图|设计图"
    r"|场景|镜头|分镜|卡片|封面|写真|肖像|作品)"
)
_ZHANG_OBJECTS: Final = r"(?:桌|椅|凳|床|脸|嘴|纸|网|弓|饼|票|沙发|牌|笑脸|面孔|唱片|光盘|钞票|餐巾)"


def _is_chinese(text: str) -> bool:
    """Whether the prompt is mainly Chinese (decides the separator of per-image prompts)."""
    cjk = len(_CJK_RE.findall(text))
    return cjk > 0 and cjk >= len(_EN_WORD_RE.findall(text))


def _cn_int(token: str) -> int | None:
    """A Chinese numeral ("三", "两", "十二", "二十") as an int; ranges ("三四") read as the upper bound."""
    if token.isdigit():
        return int(token)
    if "十" in token:
        left, _, right = token.partition("十")
        if len(left) > 1 or len(right) > 1 or "十" in right:
            return None
        tens = _CN_DIGITS.get(left, -1) if left else 1
        ones = _CN_DIGITS.get(right, -1) if right else 0
        if tens < 1 or ones < 0:
            return None
        return tens * 10 + ones
    if len(token) == 1:
        return _CN_DIGITS.get(token)
    if len(token) == 2 and all(c in _CN_DIGITS for c in token):  # "两三张": two or three
        return max(_CN_DIGITS[c] for c in token)
    return None


def _en_int(token: str) -> int | None:
    token = " ".join(token.lower().split())
    if token.isdigit():
        return int(token)
    return _EN_NUMBERS.get(token)


# --------------------------------------------------------------------------------------------
# 1. Explicit counts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Count:
    value: int
    start: int
    strong: bool  # 张/幅/images beat 款/个版本/versions when both appear


_PER_EACH_CN: Final = re.compile(r"每[^,.;:!?。、\s]{0,6}$")
_PER_EACH_EN: Final = re.compile(r"\s+(?:(?:for|per)\s+(?:each|every)|each)\b", re.IGNORECASE)

_CN_COUNT_PATTERNS: Final[tuple[tuple[re.Pattern[str], bool], ...]] = (
    (re.compile(rf"{_CN_BEFORE}(?P<n>{_NUM})\s*(?:张|幅)(?!{_ZHANG_OBJECTS})"), True),
    (re.compile(rf"{_CN_BEFORE}(?P<n>{_NUM})\s*宫格"), True),
    (re.compile(rf"{_CN_BEFORE}(?P<n>{_NUM})\s*格"), True),
    (re.compile(rf"{_CN_BEFORE}(?P<n>{_NUM})\s*(?:连拍|帧)"), True),
    (re.compile(rf"{_CN_BEFORE}(?P<n>{_NUM})\s*组(?:图|照片|插画|海报)"), True),
    (re.compile(rf"{_CN_BEFORE}(?P<n>{_NUM})\s*图(?![案标层形腾纸书表])"), True),
    (re.compile(rf"{_CN_BEFORE}(?P<n>{_NUM})\s*(?:款|版|套|页)"), False),
    (
        re.compile(
            rf"{_CN_BEFORE}(?P<n>{_NUM})\s*个\s*(?:不同的?)?\s*(?:画面|场景|镜头|分镜|版本|方案|设计"
            r"|变体|海报|头像|表情包?|贴纸|插画|图片?|视角|角度|造型|姿势|动作|时段|季节|阶段)"
        ),
        False,
    ),
    (
        re.compile(rf"{_CN_BEFORE}(?P<n>{_NUM})\s*种\s*(?:不同的?)?\s*(?:风格|版本|方案|设计|配色|变体|造型)"),
        False,
    ),
)

_EN_NOUN_AHEAD: Final = rf"(?:(?:{_EN_FILLER})\s+){{0,3}}{_EN_IMAGE_NOUN}\b"
_EN_COUNT_PATTERNS: Final[tuple[tuple[re.Pattern[str], bool], ...]] = (
    # "4 images", "four different pictures", "a 4-panel comic", "a single image"
    (
        re.compile(
            rf"(?<![\w.,:/$¥€£#%+×-])(?P<n>{_EN_NUM})(?:\s+|-)(?:(?:{_EN_FILLER})\s+){{0,3}}"
            rf"(?P<noun>{_EN_IMAGE_NOUN})\b",
            re.IGNORECASE,
        ),
        True,
    ),
    # "a set of four", "a series of 6 …"
    (
        re.compile(
            rf"\b(?:set|series|sequence|collection|batch|group|pack|gallery|grid|row|carousel)\s+of\s+"
            rf"(?P<n>{_EN_NUM})\b(?=\s*(?:$|[,.;:!?)]|{_EN_NOUN_AHEAD}|{_EN_GROUP_NOUN}\b"
            r"|(?:of|showing|depicting|with|for|in|that|featuring|about|where)\b))",
            re.IGNORECASE,
        ),
        True,
    ),
)
_EN_GRID: Final = re.compile(r"(?<![\w.])(?P<a>[1-4])\s*[x×]\s*(?P<b>[1-4])\s+grid\b", re.IGNORECASE)
_EN_PTYCH: Final = re.compile(r"\b(?P<w>diptych|triptych)\b", re.IGNORECASE)


def _explicit_count(text: str) -> _Count | None:
    """The first explicit image count (strong classifiers first), or None."""
    found: list[_Count] = []
    for pattern, strong in _CN_COUNT_PATTERNS:
        for m in pattern.finditer(text):
            value = _cn_int(m["n"])
            if value is None or value < 1 or value > 99:
                continue
            if "组" in m[0] and value < 2:  # "一组图" is a series word, not a count of one
                continue
            if value == 1 and _PER_EACH_CN.search(text, 0, m.start()):  # "每个季节一张"
                continue
            found.append(_Count(value, m.start(), strong))
    for pattern, strong in _EN_COUNT_PATTERNS:
        for m in pattern.finditer(text):
            value = _en_int(m["n"])
            if value is None or value < 1 or value > 99:
                continue
            if value == 1 and _PER_EACH_EN.match(text, m.end()):  # "one image for each season"
                continue
            noun = (m.groupdict().get("noun") or "").lower()
            weak_noun = noun.startswith(("variation", "variant", "version", "design", "alternative", "concept"))
            found.append(_Count(value, m.start(), strong and not weak_noun))
    for m in _EN_GRID.finditer(text):
        found.append(_Count(int(m["a"]) * int(m["b"]), m.start(), True))
    for m in _EN_PTYCH.finditer(text):
        found.append(_Count(2 if m["w"].lower() == "diptych" else 3, m.start(), True))
    if not found:
        return None
    preferred = [c for c in found if c.strong] or found
    return min(preferred, key=lambda c: c.start)


# --------------------------------------------------------------------------------------------
# 2. Series words
# --------------------------------------------------------------------------------------------

_SERIES_PATTERNS: Final[tuple[re.Pattern[str], ...]] = (
    re.compile(r"一组(?!(?:沙发|家具|人|数字|数据|积木|音符|书架|柜子|椅子|桌椅|乐队|队员|士兵))"),
    re.compile(rf"一系列|系列的?{_CN_IMAGE_NOUN}|组图|分镜|故事板|连环画|套图|一套的?{_CN_IMAGE_NOUN}"),
    re.compile(r"多张|多幅|多款|几张|几幅|几款|若干张|若干幅|表情包|绘本(?!风)"),
    re.compile(r"(?:多|不同|多个|几个|各个)(?:角度|视角|版本|风格)"),
    re.compile(r"\bstoryboards?\b|\bcarousel\b|\b(?:sticker|emoji)\s+(?:pack|set)\b", re.IGNORECASE),
    re.compile(
        r"\b(?:a|an|the|this|photo|image|picture|illustration|poster|comic|art)\s+series\b(?!\s+of\b)",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:a|an)\s+series\s+of\b", re.IGNORECASE),
    re.compile(
        r"\b(?:series|set|sequence|collection|batch|gallery|carousel|group)\s+of\s+"
        rf"(?:(?:{_EN_FILLER})\s+){{0,3}}(?:{_EN_IMAGE_NOUN}|{_EN_GROUP_NOUN})\b",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:multiple|several|a few|various|many|some|different|more|numerous)\s+"
        rf"(?:(?:{_EN_FILLER})\s+){{0,2}}(?:{_EN_IMAGE_NOUN}|{_EN_GROUP_NOUN})\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:variations|variants|alternatives)\b", re.IGNORECASE),
)


def _has_series_word(text: str) -> bool:
    return any(p.search(text) for p in _SERIES_PATTERNS)


# --------------------------------------------------------------------------------------------
# 3. Enumerations
# --------------------------------------------------------------------------------------------

# Strength of a list: STRONG lists make a group on their own, WEAK ones only give variants to a
# group that a count or a series word already asked for, PLAIN ones ("a bowl of apples, bananas
# and oranges") only when an explicit count has exactly as many images as the list has items.
_STRONG, _WEAK, _PLAIN = 0, 1, 2


@dataclass(frozen=True)
class _List:
    items: tuple[str, ...]
    strength: int
    rank: int  # among lists of one strength, lower wins (numbered before triggered before others)
    start: int
    cut: tuple[int, int] | None = None  # span to drop from the base prompt, if the list is removable


# Mutually exclusive states: a list of these cannot be one picture, so it means several images.
_EXCLUSIVE_CN: Final = re.compile(
    r"早晨|早上|清晨|黎明|凌晨|日出|上午|中午|正午|午后|下午|傍晚|黄昏|日落|晚上|夜晚|夜里|深夜|午夜|白天"
    r"|黑夜|夜间|白昼|夜|早|晚|春|夏|秋|冬|晴|雨|雪|雾|阴天|童年|少年|青年|中年|老年|幼年|婴儿|儿童|青春"
    r"|过去|现在|未来|古代|现代|当代"
)
_EXCLUSIVE_EN: Final = re.compile(
    r"\b(?:morning|dawn|sunrise|daybreak|noon|midday|afternoon|evening|dusk|sunset|twilight|night"
    r"|midnight|nighttime|daytime|day|spring|summer|autumn|fall|winter|sunny|rainy|snowy|foggy|stormy"
    r"|cloudy|childhood|youth|adulthood|old age|infancy|past|present|future)\b",
    re.IGNORECASE,
)

_CANONICAL: Final[tuple[tuple[re.Pattern[str], tuple[str, ...], int], ...]] = (
    (re.compile(r"春夏秋冬"), ("春", "夏", "秋", "冬"), _STRONG),
    (re.compile(r"早中晚"), ("早晨", "中午", "晚上"), _STRONG),
    (re.compile(r"喜怒哀乐"), ("喜", "怒", "哀", "乐"), _STRONG),
    (re.compile(r"四季(?!豆|如春|常青)"), ("春天", "夏天", "秋天", "冬天"), _WEAK),
    (re.compile(r"\bfour seasons\b", re.IGNORECASE), ("spring", "summer", "autumn", "winter"), _WEAK),
)

# Chinese triggers: strong ones ("涵盖", "分别是") make a group; "包括"/"即" only name variants.
_CN_TRIGGER: Final = re.compile(
    r"(?P<t>涵盖|覆盖|分别|依次|各自|包括|包含|即)"
    r"(?:是|为)?(?:展示|表现|描绘|呈现|代表|对应|展现|描述|描写|遇到|来到|去|穿着|穿|拿着|戴着|站在|坐在|位于"
    r"|身处|处于|置身|面对|看到|搭配|采用|使用|用|换成|有|在|于)?(?:了|着|是|为)?"
)
_CN_WEAK_TRIGGERS: Final = frozenset({"包括", "包含", "即"})
_CN_LIST_SUBJECT: Final = re.compile(
    r"(?:画面|内容|主题|场景|时间|时段|背景|(?:这|那)?[几\d一二两三四五六七八九十]*(?:张|幅|款)?(?:每张|每幅)?"
    r"(?:图片|图|照片|插画|海报)?)"
)
_EN_TRIGGER: Final = re.compile(
    r"\b(?:covering|across|spanning|namely|one for each of|one for each|one each for|for each of"
    r"|each (?:showing|depicting|in|at|for|with|of))\b",
    re.IGNORECASE,
)
_EN_RESPECTIVELY: Final = re.compile(r"\brespectively\b", re.IGNORECASE)
_GROUP_HEAD: Final = re.compile(
    r"场景|画面|镜头|分镜|版本|风格|时段|季节|阶段|表情|姿势|角度|视角|主题|款式|配色|张|幅|组|图"
    r"|\b(?:scenes?|shots?|panels?|frames?|versions?|variants?|variations?|styles?|seasons?|stages?"
    r"|moods?|expressions?|poses?|angles?|moments?|themes?|times?|images?|pictures?|photos?"
    r"|illustrations?|stickers?|posters?)\b",
    re.IGNORECASE,
)
_REQUIREMENT_HEAD: Final = re.compile(
    r"要求|注意|规则|要点|说明|规范|约束|细节|备注"
    r"|\b(?:requirements?|rules?|notes?|constraints?|guidelines?|specs?|specifications?|instructions?)\b",
    re.IGNORECASE,
)

# Sentence ends in the folded text ("，" is "," there); "." only before a space or the end.
_SENTENCE_END: Final = re.compile(r"[。!?;\n]|\.(?=\s|$)")
_CN_CONJ: Final = re.compile(r"以及|还有|和|与|及|跟|或")
_EN_CONJ: Final = re.compile(r"(?:^|\s+)(?:and|or|&)\s+", re.IGNORECASE)
_CN_COUNT_TAIL: Final = re.compile(
    rf"(?:等等?|这?(?:{_NUM})\s*[个种款张幅类大]?[\u4e00-\u9fff]{{0,3}})$|(?:分别|依次|各自).*$"
)
_EN_LEADING_STOP: Final = re.compile(rf"^(?:(?:{_EN_STOP})\s+)+", re.IGNORECASE)
_EN_STOP_WORD: Final = re.compile(rf"^{_EN_STOP}$", re.IGNORECASE)
_ITEM_STRIP: Final = " \t\r\n,.;:!?、。'\"“”‘’()[]【】《》"


def _sentences(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _clean_items(items: list[str]) -> tuple[str, ...]:
    """Strip, drop empties and duplicates; a list needs at least two distinct items."""
    out: list[str] = []
    for item in items:
        item = item.strip(_ITEM_STRIP)
        if item and item not in out and len(item) <= 200:
            out.append(item)
    return tuple(out) if len(out) >= 2 else ()


def _exclusive(items: tuple[str, ...]) -> bool:
    return bool(items) and all(_EXCLUSIVE_CN.search(i) or _EXCLUSIVE_EN.search(i) for i in items)


# Numbered lists: "1. … 2. …", "1、…", "(1)…", "①…", "一、…", "第一张：…", "图1：…", "Image 1: …".
_MARKERS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("dot", re.compile(r"(?:^|(?<=[\s,;:。!?、(]))(?P<n>\d{1,2})\s*[.)、](?!\d)")),
    ("paren", re.compile(r"\((?P<n>\d{1,2})\)")),
    ("circled", re.compile(r"(?P<n>[①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮])")),
    ("cn", re.compile(rf"(?:^|(?<=[\s,;:。!?]))(?P<n>{_CN_NUM})、")),
    (
        "ordinal",
        re.compile(rf"第\s*(?P<n>{_NUM})\s*(?:张|幅|格|页|帧|幕|镜|个?画面|个?场景|个?镜头|部分)\s*[:：]?"),
    ),
    ("label_cn", re.compile(rf"(?:图|画面|场景|镜头|分镜)\s*(?P<n>{_NUM})\s*[:：]")),
    (
        "label_en",
        re.compile(
            r"\b(?:image|picture|photo|panel|frame|shot|scene|page|slide)\s*#?\s*(?P<n>\d{1,2})\s*[:.)-]",
            re.IGNORECASE,
        ),
    ),
)
_CIRCLED: Final = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮"


def _marker_value(kind: str, token: str) -> int | None:
    if kind == "circled":
        return _CIRCLED.index(token) + 1
    return _cn_int(token)


def _numbered_list(text: str) -> _List | None:
    best: list[re.Match[str]] = []
    for kind, pattern in _MARKERS:
        chain: list[re.Match[str]] = []
        for m in pattern.finditer(text):
            if _marker_value(kind, m["n"]) == len(chain) + 1:
                chain.append(m)
        if len(chain) >= 2 and len(chain) > len(best):
            best = chain
    if not best:
        return None
    head = text[: best[0].start()]
    if _REQUIREMENT_HEAD.search(head[-24:]):
        return None
    items = [text[a.end() : b.start()] for a, b in itertools.pairwise(best)]
    last_start = best[-1].end()
    end = _SENTENCE_END.search(text, last_start)
    last_end = end.start() if end else len(text)
    items.append(text[last_start:last_end])
    items = [re.sub(r"^(?:是|为)", "", i.strip(_ITEM_STRIP)) for i in items]
    cleaned = _clean_items(items)
    if len(cleaned) != len(best):
        return None
    return _List(cleaned, _STRONG, 0, best[0].start(), (best[0].start(), last_end))


def _cn_lists(text: str) -> list[_List]:
    """Lists written with 、 (or with "，"/和 right after a strong trigger) in Chinese text."""
    found: list[_List] = []
    for s_start, s_end in _sentences(text):
        sentence = text[s_start:s_end]
        if not _CJK_RE.search(sentence):
            continue
        colon = sentence.find(":")
        # a. colon lists: "…四个场景：早晨、中午、晚上" / "风格：A，B，C" (commas only after a group word)
        if colon >= 0:
            head, body = sentence[:colon], sentence[colon + 1 :]
            group_head = bool(_GROUP_HEAD.search(head))
            first_clause = body.split(",")[0]
            if "、" in first_clause:
                parts, extent = first_clause.split("、"), len(first_clause)
            else:
                parts, extent = (body.split(",") if group_head else []), len(body)
            if len(parts) >= 2:
                parts = _split_cn_last(parts)
                items = _clean_items([_CN_COUNT_TAIL.sub("", p) or p for p in parts])
                if items:
                    strength = _STRONG if group_head else _WEAK
                    cut_end = s_start + colon + 1 + extent
                    found.append(_List(items, strength, 2, s_start + colon, (s_start + colon, cut_end)))
                    continue
        # b. 、 runs within a clause, with or without a trigger before them
        c_start = 0
        for clause in re.split(r"(,|:)", sentence):
            if clause in {",", ":"}:
                c_start += 1
                continue
            abs_start = s_start + c_start
            c_start += len(clause)
            trig = None
            for trig in _CN_TRIGGER.finditer(clause):  # noqa: B007 -- keep the last trigger
                pass
            # the text the list replaces: from the trigger, or from the clause start when only a
            # word like "画面" or "每张图" comes before the trigger
            cut_start = abs_start
            if trig is not None and not _CN_LIST_SUBJECT.fullmatch(clause[: trig.start()].strip()):
                cut_start = abs_start + trig.start()
            chunks = clause.split("、")
            if len(chunks) < 2:
                # "分别是早晨，中午，晚上" / "分别是早晨和晚上": a strong trigger and no 、
                if trig is not None and trig["t"] not in _CN_WEAK_TRIGGERS:
                    rest = text[abs_start + trig.end() : s_end]
                    pieces = rest.split(",")
                    if len(pieces) < 2:
                        pieces = _CN_CONJ.split(rest, maxsplit=1)
                    pieces = _split_cn_last(pieces)
                    if len(pieces) >= 2 and all(len(p.strip()) <= 12 for p in pieces):
                        items = _clean_items(pieces)
                        if items:
                            cut = (cut_start, s_end)
                            found.append(_List(items, _STRONG, 1, abs_start + trig.start(), cut))
                continue
            first, mids, last = chunks[0], chunks[1:-1], chunks[-1]
            trailing = _CN_COUNT_TAIL.sub("", last)
            last = trailing or last
            mid_len = max((len(m.strip()) for m in mids), default=0)
            split_last = _CN_CONJ.split(last, maxsplit=1)
            if len(split_last) == 2 and (not mids or len(split_last[0].strip()) <= mid_len + 2):
                tail_items = split_last
            else:
                tail_items = [last]
            if trig is not None and trig.end() <= len(first):
                first_item = first[trig.end() :].strip()
                k = max(len(i.strip()) for i in [*mids, *tail_items])
                if len(first_item) > k + 2:  # "分别遇到兔子、小鹿和狐狸": drop the verb
                    first_item = first_item[-k:]
                strength = _WEAK if trig["t"] in _CN_WEAK_TRIGGERS else _STRONG
                items = _clean_items([first_item, *mids, *tail_items])
                if items:
                    cut = (cut_start, abs_start + len(clause))
                    found.append(_List(items, strength, 1, abs_start + trig.start(), cut))
                continue
            # untriggered: the first item is as long as the others, the last stops at 的
            k = max([len(i.strip()) for i in [*mids, *tail_items[:-1]]] or [len(tail_items[-1].strip())])
            tail_items[-1] = re.split(r"的|时候|里|中", tail_items[-1])[0][: k + 2]
            first_item = first.strip()[-k:] if k else first
            items = _clean_items([first_item, *mids, *tail_items])
            if items:
                strength = _STRONG if _exclusive(items) else _PLAIN
                found.append(_List(items, strength, 3, abs_start))
    return found


def _split_cn_last(parts: list[str]) -> list[str]:
    """Split "秋和冬" (the last piece of a list) into two items."""
    *head, last = parts
    pieces = _CN_CONJ.split(last, maxsplit=1)
    if len(pieces) == 2 and pieces[0].strip() and pieces[1].strip():
        return [*head, *pieces]
    return parts


def _words(text: str) -> list[str]:
    return text.split()


def _en_item(item: str) -> str:
    item = _EN_RESPECTIVELY.sub("", item)
    return _EN_LEADING_STOP.sub("", item.strip(_ITEM_STRIP)).strip(_ITEM_STRIP)


def _cut_at_stop(words: list[str]) -> list[str]:
    """Keep the words of a trailing item up to the first stop word after its first word."""
    for i, word in enumerate(words[1:], start=1):
        if _EN_STOP_WORD.match(word):
            return words[:i]
    return words


def _en_lists(text: str) -> list[_List]:
    """Lists written "a, b and c" (or after a colon or a trigger) in English text."""
    found: list[_List] = []
    for s_start, s_end in _sentences(text):
        sentence = text[s_start:s_end]
        if not _EN_WORD_RE.search(sentence):
            continue
        respectively = bool(_EN_RESPECTIVELY.search(sentence))
        colon = sentence.find(":")
        if colon >= 0:
            head, body = sentence[:colon], sentence[colon + 1 :]
            parts = body.split(",")
            *rest, last = parts
            pieces = _EN_CONJ.split(last, maxsplit=1)
            parts = [*rest, *pieces] if len(pieces) == 2 else parts
            items = _clean_items([_en_item(p) for p in parts])
            if items and all(len(_words(i)) <= 12 for i in items):
                strength = _STRONG if _GROUP_HEAD.search(head) or respectively else _WEAK
                found.append(_List(items, strength, 2, s_start + colon, (s_start + colon, s_end)))
                continue
        trig = _EN_TRIGGER.search(sentence)
        if trig is not None:
            body = sentence[trig.end() :]
            parts = body.split(",")
            *rest, last = parts
            pieces = _EN_CONJ.split(last, maxsplit=1)
            if len(pieces) == 2:
                parts = [*rest, pieces[0], " ".join(_cut_at_stop(_words(pieces[1])))]
            items = _clean_items([_en_item(p) for p in parts])
            if items and all(len(_words(i)) <= 8 for i in items):
                end = s_start + trig.end() + len(body)
                found.append(_List(items, _STRONG, 1, s_start + trig.start(), (s_start + trig.start(), end)))
                continue
        parts = sentence.split(",")
        i = 0
        while i < len(parts) - 1:
            j = i + 1
            while j < len(parts) and not _EN_CONJ.search(parts[j]) and len(_words(parts[j])) <= 5:
                j += 1
            if j >= len(parts) or not _EN_CONJ.search(parts[j]):
                i = j if j > i + 1 else i + 1
                continue
            pre, post = _EN_CONJ.split(parts[j], maxsplit=1)
            if len(_words(pre)) > 5:
                i = j
                continue
            middle = [parts[x] for x in range(i + 1, j)] + ([pre] if pre.strip() else [])
            k = max(len(_words(_en_item(m))) for m in middle) if middle else 1
            k = max(k, 1)
            first_words = _words(parts[i])
            first = " ".join(first_words[-(k + 1) :]) if len(first_words) > k else parts[i]
            last = " ".join(_cut_at_stop(_words(_EN_RESPECTIVELY.sub("", post)))[: k + 1])
            raw = [first, *middle, last]
            items = _clean_items([_en_item(x) for x in raw])
            if len(items) >= 3 or (respectively and len(items) >= 2):
                strength = _STRONG if respectively or _exclusive(items) else _PLAIN
                found.append(_List(items, strength, 3, s_start + sum(len(p) + 1 for p in parts[:i])))
            i = j + 1
    return found


def _canonical_lists(text: str) -> list[_List]:
    return [
        _List(items, strength, 4, m.start()) for pattern, items, strength in _CANONICAL for m in pattern.finditer(text)
    ]


def _best_list(text: str) -> _List | None:
    lists: list[_List] = []
    numbered = _numbered_list(text)
    if numbered is not None:
        lists.append(numbered)
    lists += _cn_lists(text)
    lists += _en_lists(text)
    lists += _canonical_lists(text)
    if not lists:
        return None
    return min(lists, key=lambda lst: (lst.strength, lst.rank, lst.start))


# --------------------------------------------------------------------------------------------
# 4. Putting it together
# --------------------------------------------------------------------------------------------

_QUOTED: Final = re.compile(r"“[^”]*”|\"[^\"]*\"|「[^」]*」|『[^』]*』")
_TRAILING_PUNCT: Final = " \t\r\n。.，,；;！!？?、：:"


def _join(base: str, suffix: str, chinese: bool) -> str:
    base = base.rstrip(_TRAILING_PUNCT)
    if not base:
        return suffix
    return f"{base}{'，' if chinese else ', '}{suffix}"


def _numbering(index: int, total: int, chinese: bool) -> str:
    return f"第{index}张/共{total}张" if chinese else f"image {index} of {total}"


def plan_group(prompt: str, max_images: int) -> GroupPlan:
    """Plan the images of an ``auto`` group request from its prompt (pure and deterministic).

    ``max_images`` is the combined cap the caller computed, ``min(max_images, 15 - references)``,
    and must be within 1..15. A single-image plan keeps the prompt unchanged.
    """
    if not 1 <= max_images <= MAX_GROUP_IMAGES:
        raise ValueError(f"max_images must be within 1..{MAX_GROUP_IMAGES}, got {max_images}")
    text = prompt.translate(_FOLD)
    if not text.strip():
        return GroupPlan((prompt,), "single")

    # 1. read the three signals (numbers and series words inside quotes are text to draw)
    unquoted = _QUOTED.sub(lambda m: "_" * len(m[0]), text)
    count = _explicit_count(unquoted)
    series = _has_series_word(unquoted)
    listed = _best_list(text)

    # 2. decide the number and the variants
    variants: tuple[str, ...] = ()
    if count is not None:
        total, reason = count.value, f"explicit count {count.value}"
        if listed is not None and (listed.strength != _PLAIN or len(listed.items) == total):
            variants = listed.items
    elif listed is not None and listed.strength == _STRONG:
        total, reason, variants = len(listed.items), "enumeration", listed.items
    elif series and listed is not None and listed.strength == _WEAK:
        total, reason, variants = len(listed.items), "series enumeration", listed.items
    elif series:
        total, reason = DEFAULT_SERIES_COUNT, "series default"
    else:
        return GroupPlan((prompt,), "single")

    if total > max_images:
        total, reason = max_images, f"{reason}, capped at {max_images}"
    if total <= 1:
        return GroupPlan((prompt,), reason if count is not None else f"{reason}; single")

    # 3. one prompt per image: the shared description plus the variant (or its number)
    chinese = _is_chinese(text)
    if not variants:
        prompts = [_join(prompt, _numbering(i + 1, total, chinese), chinese) for i in range(total)]
        return GroupPlan(tuple(prompts), reason)
    assert listed is not None
    base = prompt
    if listed.cut is not None:
        a, b = listed.cut
        base = prompt[:a].rstrip(_TRAILING_PUNCT) + prompt[b:]
    padded = total > len(variants)
    prompts = []
    for i in range(total):
        variant = variants[i % len(variants)]
        if padded:
            variant = _join(variant, _numbering(i + 1, total, chinese), chinese)
        prompts.append(_join(base, variant, chinese))
    return GroupPlan(tuple(prompts), reason)


# --------------------------------------------------------------------------------------------
# The plug point
# --------------------------------------------------------------------------------------------


class Planner(ABC):
    """Decides the images of an ``auto`` group request. ``max_images`` is already combined (1..15)."""

    @abstractmethod
    async def plan(self, prompt: str, max_images: int) -> GroupPlan:
        """Plan the images for ``prompt``, never more than ``max_images``."""

    async def aclose(self) -> None:  # noqa: B027 -- optional hook, most planners hold nothing
        """Release what the planner holds (HTTP clients); the default holds nothing."""


class RulePlanner(Planner):
    """The deterministic rules of :func:`plan_group`."""

    async def plan(self, prompt: str, max_images: int) -> GroupPlan:
        return plan_group(prompt, max_images)


_LLM_SYSTEM_PROMPT: Final = """\
You plan image generation requests. Given a user's image prompt (Chinese or English) and a maximum
number of images, decide how many separate images the user wants and write one self-contained
prompt per image, in the user's language. Use several images only when the prompt asks for them:
an explicit number of images ("生成3张", "4 images", "四格漫画", "九宫格"), an enumeration of
variants that cannot share one picture ("早晨、中午、晚上", "spring, summer, autumn and winter"), or
a series ("一组", "系列", "分镜", "storyboard"). A number of objects ("two cats", "一只猫") is not a
number of images; "3D", "2K", "16:9", dates and prices are not counts. Each image prompt keeps the
shared description and adds that image's own variant. Never exceed the maximum.
Reply with JSON only: {"prompts": ["...", "..."]}"""


class LLMPlanner(Planner):
    """Asks an OpenAI-compatible chat endpoint for the plan; falls back to the rules on any failure.

    ``POST {base_url}/chat/completions`` with ``model`` and, when given, ``Authorization: Bearer
    {api_key}``; the reply's message content must be JSON ``{"prompts": [...]}``. A timeout, an HTTP
    error, unreadable JSON or an empty list logs a warning and returns the ``fallback`` plan
    (the rules by default); more prompts than ``max_images`` are cut.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        fallback: Planner | None = None,
        json_mode: bool = True,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.json_mode = json_mode
        self.fallback: Planner = fallback if fallback is not None else RulePlanner()
        self._client = client
        self._owns_client = client is None

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def plan(self, prompt: str, max_images: int) -> GroupPlan:
        if not 1 <= max_images <= MAX_GROUP_IMAGES:
            raise ValueError(f"max_images must be within 1..{MAX_GROUP_IMAGES}, got {max_images}")
        try:
            async with asyncio.timeout(self.timeout):
                prompts = await self._ask(prompt, max_images)
        except Exception as exc:
            logger.warning(
                "LLM planner at %s failed (%s: %s); using the fallback planner",
                self.url,
                type(exc).__name__,
                exc or "timed out",
            )
            return await self.fallback.plan(prompt, max_images)
        if len(prompts) > max_images:
            logger.warning("LLM planner returned %d prompts, cut to %d", len(prompts), max_images)
            prompts = prompts[:max_images]
        if len(prompts) == 1:
            return GroupPlan((prompt,), "llm single")
        return GroupPlan(tuple(prompts), f"llm {len(prompts)}")

    async def _ask(self, prompt: str, max_images: int) -> list[str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": _LLM_SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": json.dumps({"prompt": prompt, "max_images": max_images}, ensure_ascii=False),
                },
            ],
            "temperature": 0,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = await self._get_client().post(self.url, json=body, headers=headers, timeout=self.timeout)
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        return _parse_prompts(content)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.fallback.aclose()


_FENCE: Final = re.compile(r"^\s*```(?:json)?\s*(?P<body>.*?)\s*```\s*$", re.DOTALL)


def _parse_prompts(content: object) -> list[str]:
    """The prompts of an LLM reply ``{"prompts": [...]}`` (a ```json fence is tolerated)."""
    if not isinstance(content, str):
        raise ValueError("message content is not text")
    fenced = _FENCE.match(content)
    data = json.loads(fenced["body"] if fenced else content)
    raw = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise ValueError('reply has no "prompts" list')
    prompts = [p.strip() for p in raw if isinstance(p, str) and p.strip()]
    if not prompts or len(prompts) != len(raw):
        raise ValueError('"prompts" must be a non-empty list of non-empty strings')
    return prompts
