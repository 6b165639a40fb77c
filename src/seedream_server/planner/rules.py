"""The rule tables of the group planner, as data: number words, image nouns, stop words, series
words, list triggers and markers, and the few numeric limits the matchers tune themselves by.

Nothing here runs at request time beyond compiling the patterns once at import; the matching
functions live in :mod:`.counting` and :mod:`.lists`. The patterns work on *folded* text (see
:data:`FOLD`), so they only spell ASCII punctuation where a prompt may use either width.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Final, NamedTuple

# --------------------------------------------------------------------------------------------
# Text folding and scripts
# --------------------------------------------------------------------------------------------

_FULLWIDTH_FIRST: Final = 0xFF01  # "！", the first full-width form of a printable ASCII character
_ASCII_FIRST: Final = 0x21  # "!"
_PRINTABLE_ASCII_COUNT: Final = 94  # "!" .. "~"
_IDEOGRAPHIC_SPACE: Final = "\u3000"

# Full-width ASCII (，：；！？（）０-９Ａ-Ｚ) and the ideographic space fold to ASCII one character for
# one character, so offsets found in the folded text are offsets in the original prompt.
FOLD: Final = str.maketrans(
    {chr(_FULLWIDTH_FIRST + i): chr(_ASCII_FIRST + i) for i in range(_PRINTABLE_ASCII_COUNT)}
    | {_IDEOGRAPHIC_SPACE: " "}
)

CJK_RE: Final = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
EN_WORD_RE: Final = re.compile(r"[A-Za-z]+")

# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------

MAX_COUNT: Final = 99
"""The largest number read as a count of images (counts are written with at most two digits)."""

CN_TEN: Final = "十"
CN_DIGITS: Final[dict[str, int]] = {
    "零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4,
    "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
}  # fmt: skip
CN_NUM: Final = r"[零〇一二两三四五六七八九十]{1,3}"
NUM: Final = rf"(?:\d{{1,2}}|{CN_NUM})"
# What may not stand right before a Chinese count: digits, decimals, ordinals ("第一"), "每一",
# "同一", "这一", "几", "各一" ... and other numerals (so "十二张" is never read as "二张").
CN_BEFORE: Final = r"(?<![\d.第每同这那哪另单几各零〇一二两三四五六七八九十百千万])"

EN_NUMBERS: Final[dict[str, int]] = {
    "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "twenty": 20, "a couple of": 2, "a pair of": 2, "a trio of": 3,
    "a dozen": 12,
}  # fmt: skip
EN_NUM: Final = r"(?:\d{1,2}|" + "|".join(sorted(EN_NUMBERS, key=len, reverse=True)) + ")"

# --------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------

# Nouns that name an image: a number in front of one of these is a number of images.
EN_IMAGE_NOUN: Final = (
    r"(?:images?|pictures?|pics?|photos?|photographs?|illustrations?|panels?|frames?|shots?"
    r"|snapshots?|stills?|drawings?|paintings?|sketch(?:es)?|renders?|renderings?|artworks?"
    r"|wallpapers?|posters?|stickers?|portraits?|headshots?|scenes?|slides?|graphics?|visuals?"
    r"|banners?|thumbnails?|covers?|mockups?|comics?|avatars?|variations?|variants?|versions?"
    r"|designs?|alternatives?|concepts?|landscapes?|cityscapes?|seascapes?|watercolou?rs?|postcards?|prints?)"
)
# Image nouns that name alternatives rather than images: their count is weak ("3 logo designs").
EN_WEAK_NOUN_PREFIXES: Final = ("variation", "variant", "version", "design", "alternative", "concept")
# Words of a group that are not images themselves ("a series of scenes", "from different angles").
EN_GROUP_NOUN: Final = r"(?:scenes|moments|stages|steps|events|angles|views|seasons|poses|expressions)"
EN_STOP: Final = (
    r"(?:in|on|at|of|with|and|or|the|a|an|to|for|from|by|into|onto|under|over|is|are|was|were|be"
    r"|that|which|who|while|each|per|as|this|these|those|its|their|his|her|during|near|beside"
    r"|behind|above|below|then|but|so|than|like|about|after|before|around|through|across)"
)
# A word allowed between a number and its noun ("4 different images", "three cute cat stickers"):
# not a stop word and not a plural ("two cats in pictures" does not count).
EN_FILLER: Final = rf"(?!{EN_STOP}\b)[a-z][a-z'-]*(?<![^su]s)"

# Chinese image words; a number before 张/幅 counts unless a non-image object follows.
CN_IMAGE_NOUN: Final = (
    r"(?:图片|图|照片|相片|海报|插画|插图|画面|画|壁纸|头像|表情包|表情|贴纸|漫画|素材|效果图|设计图"
    r"|场景|镜头|分镜|卡片|封面|写真|肖像|作品)"
)
ZHANG_OBJECTS: Final = r"(?:桌|椅|凳|床|脸|嘴|纸|网|弓|饼|票|沙发|牌|笑脸|面孔|唱片|光盘|钞票|餐巾)"

# --------------------------------------------------------------------------------------------
# 1. Explicit counts
# --------------------------------------------------------------------------------------------


class CountRule(NamedTuple):
    """A pattern whose group ``n`` is a number of images; ``strong`` counts (张/幅/images) beat weak
    ones (款/个版本/versions) when both appear in one prompt."""

    pattern: re.Pattern[str]
    strong: bool


MIN_GROUP_COUNT: Final = 2
"""A count before 组 ("三组图") names a group only from two up: "一组图" is a series word."""

PER_EACH_CN: Final = re.compile(r"每[^,.;:!?。、\s]{0,6}$")
PER_EACH_EN: Final = re.compile(r"\s+(?:(?:for|per)\s+(?:each|every)|each)\b", re.IGNORECASE)

CN_COUNT_RULES: Final[tuple[CountRule, ...]] = (
    CountRule(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*(?:张|幅)(?!{ZHANG_OBJECTS})"), True),
    CountRule(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*宫格"), True),
    CountRule(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*格"), True),
    CountRule(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*(?:连拍|帧)"), True),
    CountRule(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*组(?:图|照片|插画|海报)"), True),
    CountRule(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*图(?![案标层形腾纸书表])"), True),
    CountRule(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*(?:款|版|套|页)"), False),
    CountRule(
        re.compile(
            rf"{CN_BEFORE}(?P<n>{NUM})\s*个\s*(?:不同的?)?\s*(?:画面|场景|镜头|分镜|版本|方案|设计"
            r"|变体|海报|头像|表情包?|贴纸|插画|图片?|视角|角度|造型|姿势|动作|时段|季节|阶段)"
        ),
        False,
    ),
    CountRule(
        re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*种\s*(?:不同的?)?\s*(?:风格|版本|方案|设计|配色|变体|造型)"),
        False,
    ),
)

_EN_NOUN_AHEAD: Final = rf"(?:(?:{EN_FILLER})\s+){{0,3}}{EN_IMAGE_NOUN}\b"
EN_COUNT_RULES: Final[tuple[CountRule, ...]] = (
    # "4 images", "four different pictures", "a 4-panel comic", "a single image"
    CountRule(
        re.compile(
            rf"(?<![\w.,:/$¥€£#%+×-])(?P<n>{EN_NUM})(?:\s+|-)(?:(?:{EN_FILLER})\s+){{0,3}}"
            rf"(?P<noun>{EN_IMAGE_NOUN})\b",
            re.IGNORECASE,
        ),
        True,
    ),
    # "a set of four", "a series of 6 …"
    CountRule(
        re.compile(
            rf"\b(?:set|series|sequence|collection|batch|group|pack|gallery|grid|row|carousel)\s+of\s+"
            rf"(?P<n>{EN_NUM})\b(?=\s*(?:$|[,.;:!?)]|{_EN_NOUN_AHEAD}|{EN_GROUP_NOUN}\b"
            r"|(?:of|showing|depicting|with|for|in|that|featuring|about|where)\b))",
            re.IGNORECASE,
        ),
        True,
    ),
)
EN_GRID: Final = re.compile(r"(?<![\w.])(?P<a>[1-4])\s*[x×]\s*(?P<b>[1-4])\s+grid\b", re.IGNORECASE)
EN_PTYCH: Final = re.compile(r"\b(?P<w>diptych|triptych)\b", re.IGNORECASE)
PTYCH_PANELS: Final[dict[str, int]] = {"diptych": 2, "triptych": 3}

# --------------------------------------------------------------------------------------------
# 2. Series words
# --------------------------------------------------------------------------------------------

SERIES_PATTERNS: Final[tuple[re.Pattern[str], ...]] = (
    re.compile(r"一组(?!(?:沙发|家具|人|数字|数据|积木|音符|书架|柜子|椅子|桌椅|乐队|队员|士兵))"),
    re.compile(rf"一系列|系列的?{CN_IMAGE_NOUN}|组图|分镜|故事板|连环画(?!风)|套图|一套的?{CN_IMAGE_NOUN}"),
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
        rf"(?:(?:{EN_FILLER})\s+){{0,3}}(?:{EN_IMAGE_NOUN}|{EN_GROUP_NOUN})\b",
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:multiple|several|a few|various|many|some|different|more|numerous)\s+"
        rf"(?:(?:{EN_FILLER})\s+){{0,2}}(?:{EN_IMAGE_NOUN}|{EN_GROUP_NOUN})\b",
        re.IGNORECASE,
    ),
    re.compile(r"\b(?:variations|variants|alternatives)\b", re.IGNORECASE),
)

# --------------------------------------------------------------------------------------------
# 3. Enumerations
# --------------------------------------------------------------------------------------------


class Strength(IntEnum):
    """How much a list says about the number of images; a lower value wins when lists compete."""

    STRONG = 0
    """Makes a group on its own ("涵盖早晨、中午、晚上", "1. … 2. …")."""
    WEAK = 1
    """Only gives variants to a group that a count or a series word already asked for ("包括")."""
    PLAIN = 2
    """Used only when an explicit count has exactly as many images as the list has items ("a bowl of
    apples, bananas and oranges" is one picture otherwise)."""


class ListRank(IntEnum):
    """Among lists of one :class:`Strength`, the lower rank wins: how the list was found."""

    NUMBERED = 0
    """Numbered items: "1. … 2. …", "①…", "第一张…", "Image 1: …"."""
    TRIGGERED = 1
    """After a trigger word: "分别是…", "covering …"."""
    COLON = 2
    """After a colon: "四个场景：早晨、中午、晚上"."""
    RUN = 3
    """An untriggered run: "早晨、中午、晚上的城市", "morning, noon and night"."""
    CANONICAL = 4
    """A fixed phrase that names its items: "春夏秋冬", "four seasons"."""


MIN_LIST_ITEMS: Final = 2
"""A list needs at least this many distinct items."""
MIN_EN_RUN_ITEMS: Final = 3
"""An untriggered English comma run ("a, b and c") needs this many items unless "respectively" follows."""
MAX_ITEM_CHARS: Final = 200
"""Longer pieces are prose, not list items."""
REQUIREMENT_LOOKBEHIND: Final = 24
"""Characters before a numbered list searched for a requirement head ("要求：1. 高清 2. …")."""
MAX_CN_TRIGGERED_ITEM_CHARS: Final = 12
"""Longest item of a comma- or 和-separated Chinese list after a strong trigger ("分别是早晨，中午")."""
CN_ITEM_SLACK_CHARS: Final = 2
"""How many characters the first or last item of a 、 run may exceed the longest other item by before
it is read as carrying text that is not the item ("分别遇到兔子" keeps "兔子")."""
MAX_EN_COLON_ITEM_WORDS: Final = 12
"""Longest item (in words) of an English list after a colon."""
MAX_EN_TRIGGERED_ITEM_WORDS: Final = 8
"""Longest item (in words) of an English list after a trigger ("covering …")."""
MAX_EN_RUN_ITEM_WORDS: Final = 5
"""Longest middle item (in words) of an untriggered English comma run."""
EN_ITEM_SLACK_WORDS: Final = 1
"""How many words the first and last items of an English run may exceed the longest middle item by."""

# Mutually exclusive states: a list of these cannot be one picture, so it means several images.
EXCLUSIVE_CN: Final = re.compile(
    r"早晨|早上|清晨|黎明|凌晨|日出|上午|中午|正午|午后|下午|傍晚|黄昏|日落|晚上|夜晚|夜里|深夜|午夜|白天"
    r"|黑夜|夜间|白昼|夜|早|晚|春|夏|秋|冬|晴|雨|雪|雾|阴天|童年|少年|青年|中年|老年|幼年|婴儿|儿童|青春"
    r"|过去|现在|未来|古代|现代|当代"
)
EXCLUSIVE_EN: Final = re.compile(
    r"\b(?:morning|dawn|sunrise|daybreak|noon|midday|afternoon|evening|dusk|sunset|twilight|night"
    r"|midnight|nighttime|daytime|day|spring|summer|autumn|fall|winter|sunny|rainy|snowy|foggy|stormy"
    r"|cloudy|childhood|youth|adulthood|old age|infancy|past|present|future)\b",
    re.IGNORECASE,
)

CANONICAL: Final[tuple[tuple[re.Pattern[str], tuple[str, ...], Strength], ...]] = (
    (re.compile(r"春夏秋冬"), ("春", "夏", "秋", "冬"), Strength.STRONG),
    (re.compile(r"早中晚"), ("早晨", "中午", "晚上"), Strength.STRONG),
    (re.compile(r"喜怒哀乐"), ("喜", "怒", "哀", "乐"), Strength.STRONG),
    (re.compile(r"四季(?!豆|如春|常青)"), ("春天", "夏天", "秋天", "冬天"), Strength.WEAK),
    (re.compile(r"\bfour seasons\b", re.IGNORECASE), ("spring", "summer", "autumn", "winter"), Strength.WEAK),
)

# Chinese triggers: strong ones ("涵盖", "分别是") make a group; "包括"/"即" only name variants.
CN_TRIGGER: Final = re.compile(
    r"(?P<t>涵盖|覆盖|分别|依次|各自|包括|包含|即)"
    r"(?:是|为)?(?:展示|表现|描绘|呈现|代表|对应|展现|描述|描写|遇到|来到|去|穿着|穿|拿着|戴着|站在|坐在|位于"
    r"|身处|处于|置身|面对|看到|搭配|采用|使用|用|换成|有|在|于)?(?:了|着|是|为)?"
)
CN_WEAK_TRIGGERS: Final = frozenset({"包括", "包含", "即"})
CN_LIST_SUBJECT: Final = re.compile(
    r"(?:画面|内容|主题|场景|时间|时段|背景|(?:这|那)?[几\d一二两三四五六七八九十]*(?:张|幅|款)?(?:每张|每幅)?"
    r"(?:图片|图|照片|插画|海报)?)"
)
EN_TRIGGER: Final = re.compile(
    r"\b(?:covering|across|spanning|namely|one for each of|one for each|one each for|for each of"
    r"|each (?:showing|depicting|in|at|for|with|of))\b",
    re.IGNORECASE,
)
EN_RESPECTIVELY: Final = re.compile(r"\brespectively\b", re.IGNORECASE)
GROUP_HEAD: Final = re.compile(
    r"场景|画面|镜头|分镜|版本|风格|时段|季节|阶段|表情|姿势|角度|视角|主题|款式|配色|张|幅|组|图"
    r"|\b(?:scenes?|shots?|panels?|frames?|versions?|variants?|variations?|styles?|seasons?|stages?"
    r"|moods?|expressions?|poses?|angles?|moments?|themes?|times?|images?|pictures?|photos?"
    r"|illustrations?|stickers?|posters?)\b",
    re.IGNORECASE,
)
REQUIREMENT_HEAD: Final = re.compile(
    r"要求|注意|规则|要点|说明|规范|约束|细节|备注"
    r"|\b(?:requirements?|rules?|notes?|constraints?|guidelines?|specs?|specifications?|instructions?)\b",
    re.IGNORECASE,
)

# Sentence ends in the folded text ("，" is "," there); "." only before a space or the end.
SENTENCE_END: Final = re.compile(r"[。!?;\n]|\.(?=\s|$)")
CN_CONJ: Final = re.compile(r"以及|还有|和|与|及|跟|或")
EN_CONJ: Final = re.compile(r"(?:^|\s+)(?:and|or|&)\s+", re.IGNORECASE)
CN_CLAUSE_SPLIT: Final = re.compile(r"(,|:)")
CN_CLAUSE_SEPARATORS: Final = frozenset({",", ":"})
CN_LAST_ITEM_END: Final = re.compile(r"的|时候|里|中")
CN_ITEM_COPULA: Final = re.compile(r"^(?:是|为)")
CN_COUNT_TAIL: Final = re.compile(
    rf"(?:等等?|这?(?:{NUM})\s*[个种款张幅类大]?[\u4e00-\u9fff]{{0,3}})$|(?:分别|依次|各自).*$"
)
EN_LEADING_STOP: Final = re.compile(rf"^(?:(?:{EN_STOP})\s+)+", re.IGNORECASE)
EN_STOP_WORD: Final = re.compile(rf"^{EN_STOP}$", re.IGNORECASE)
ITEM_STRIP: Final = " \t\r\n,.;:!?、。'\"“”‘’()[]【】《》"

# Numbered lists: "1. … 2. …", "1、…", "(1)…", "①…", "一、…", "第一张：…", "图1：…", "Image 1: …".
CIRCLED: Final = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮"


class Marker(NamedTuple):
    """One way of numbering list items; group ``n`` is the item's number."""

    kind: str
    pattern: re.Pattern[str]


MARKERS: Final[tuple[Marker, ...]] = (
    Marker("dot", re.compile(r"(?:^|(?<=[\s,;:。!?、(]))(?P<n>\d{1,2})\s*[.)、](?!\d)")),
    Marker("paren", re.compile(r"\((?P<n>\d{1,2})\)")),
    Marker("circled", re.compile(rf"(?P<n>[{CIRCLED}])")),
    Marker("cn", re.compile(rf"(?:^|(?<=[\s,;:。!?]))(?P<n>{CN_NUM})、")),
    Marker(
        "ordinal",
        re.compile(rf"第\s*(?P<n>{NUM})\s*(?:张|幅|格|页|帧|幕|镜|个?画面|个?场景|个?镜头|部分)\s*[:：]?"),
    ),
    Marker("label_cn", re.compile(rf"(?:图|画面|场景|镜头|分镜)\s*(?P<n>{NUM})\s*[:：]")),
    Marker(
        "label_en",
        re.compile(
            r"\b(?:image|picture|photo|panel|frame|shot|scene|page|slide)\s*#?\s*(?P<n>\d{1,2})\s*[:.)-]",
            re.IGNORECASE,
        ),
    ),
)

# --------------------------------------------------------------------------------------------
# 4. Building the plan
# --------------------------------------------------------------------------------------------

QUOTED: Final = re.compile(r"“[^”]*”|\"[^\"]*\"|「[^」]*」|『[^』]*』")
TRAILING_PUNCT: Final = " \t\r\n。.，,；;！!？?、：:"
EN_THE_BEFORE: Final = re.compile(r"\bthe\s+$", re.IGNORECASE)
""""the" right before a fixed phrase ("the four seasons"): replaced with the phrase by one variant."""
