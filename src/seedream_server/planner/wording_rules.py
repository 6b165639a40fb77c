"""Rule tables, part 2: the per-image wording of a group (data). A group prompt's count and series phrases
and what ONE image's prompt says instead; :mod:`.wording` applies them. Part 1 (counting, lists, the plan's
own tables) is :mod:`.rules`.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from .rules import (
    CN_BEFORE,
    CN_IMAGE_NOUN,
    EN_FILLER,
    EN_GROUP_NOUN,
    EN_IMAGE_NOUN,
    EN_NUM,
    NUM,
    ZHANG_OBJECTS,
)

# --------------------------------------------------------------------------------------------
# 5. Per-image wording: one image's prompt drops the group's count and series words
# --------------------------------------------------------------------------------------------


class Rewrite(NamedTuple):
    """A group phrase and what one image's prompt says instead.

    ``replacement`` is a template for :meth:`re.Match.expand`, or None for "one of the noun phrase":
    an article, the kept fillers and the singular of group ``noun`` ("4 different watercolor
    landscapes" -> "a watercolor landscape"). When the pattern has a group ``n`` the phrase is only
    rewritten for two or more (a count of one already names one image).
    """

    pattern: re.Pattern[str]
    replacement: str | None


_CN_COUNT_LEAD: Final = r"(?:一共|总共|共)?\s*"
_CN_DIFFERENT: Final = r"(?:\s*不同的?|\s*不一样的?)?"

CN_REWRITES: Final[tuple[Rewrite, ...]] = (
    Rewrite(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*格(?=漫画)"), "单格"),
    Rewrite(re.compile(rf"{_CN_COUNT_LEAD}{CN_BEFORE}(?P<n>{NUM})\s*宫格的?"), ""),
    Rewrite(re.compile(rf"{_CN_COUNT_LEAD}{CN_BEFORE}(?P<n>{NUM})\s*格的?"), ""),
    Rewrite(re.compile(rf"{_CN_COUNT_LEAD}{CN_BEFORE}(?P<n>{NUM})\s*(?:张|幅)(?!{ZHANG_OBJECTS}){_CN_DIFFERENT}"), ""),
    Rewrite(re.compile(rf"{_CN_COUNT_LEAD}{CN_BEFORE}(?P<n>{NUM})\s*(?:连拍|帧)的?"), ""),
    Rewrite(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*组(?=图|照片|插画|海报)"), ""),
    Rewrite(re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*(?=图(?![案标层形腾纸书表]))"), ""),
    Rewrite(re.compile(rf"{_CN_COUNT_LEAD}{CN_BEFORE}(?P<n>{NUM})\s*(?:款|版|套|页){_CN_DIFFERENT}"), ""),
    Rewrite(
        re.compile(
            rf"{CN_BEFORE}(?P<n>{NUM})\s*个{_CN_DIFFERENT}\s*(?=画面|场景|镜头|分镜|版本|方案|设计|变体|海报|头像"
            r"|表情|贴纸|插画|图|视角|角度|造型|姿势|动作|时段|季节|阶段)"
        ),
        "",
    ),
    Rewrite(
        re.compile(rf"{CN_BEFORE}(?P<n>{NUM})\s*种{_CN_DIFFERENT}\s*(?=风格|版本|方案|设计|配色|变体|造型)"), "一种"
    ),
    # "每个季节一张": one image per variant, said of the whole group
    Rewrite(re.compile(r"每(?:一)?个?[^,.;:!?。、\s]{0,6}(?:各)?(?:一|1)\s*(?:张|幅)(?:图片?|照片)?"), ""),
    # series words (see SERIES_PATTERNS)
    Rewrite(re.compile(r"一组(?!(?:沙发|家具|人|数字|数据|积木|音符|书架|柜子|椅子|桌椅|乐队|队员|士兵))"), ""),
    Rewrite(re.compile(rf"一系列的?|系列的?(?={CN_IMAGE_NOUN})|一套的?(?={CN_IMAGE_NOUN})"), ""),
    Rewrite(re.compile(r"组图|套图"), "图片"),
    Rewrite(re.compile(r"分镜|故事板"), "镜头画面"),
    Rewrite(re.compile(r"连环画(?!风)"), "连环画风格的单幅画面"),
    Rewrite(re.compile(r"(?:多|几|若干)(?:张|幅|款)"), ""),
    Rewrite(re.compile(r"表情包"), "表情"),
    Rewrite(re.compile(r"绘本(?!风)"), "绘本风插画"),
    Rewrite(re.compile(r"(?:多|不同|多个|几个|各个)(?=角度|视角|版本)"), "一个"),
    Rewrite(re.compile(r"(?:多|不同|多个|几个|各个)(?=风格)"), "一种"),
)

_EN_PHRASE: Final = rf"(?P<fill>(?:(?:{EN_FILLER})\s+){{0,3}})(?P<noun>{EN_IMAGE_NOUN}|{EN_GROUP_NOUN})\b"
_EN_DET: Final = r"(?P<det>\b(?:a|an|the|one)\s+)?"
_EN_CONTAINER: Final = r"(?:set|series|sequence|collection|batch|group|pack|gallery|grid|row|carousel)"
_EN_FRAME_NOUN: Final = r"(?:panels?|frames?|shots?|slides?|images?|pictures?|scenes?|stills?|parts?|pages?|steps?)"

EN_REWRITES: Final[tuple[Rewrite, ...]] = (
    # "a story told in 4 panels", "a storyboard with 6 frames showing": the frames are the group
    Rewrite(
        re.compile(
            rf"\s*\b(?:with|in|across|over|using|as)\s+(?P<n>{EN_NUM})\s+(?:(?:{EN_FILLER})\s+){{0,2}}"
            rf"{_EN_FRAME_NOUN}\b",
            re.IGNORECASE,
        ),
        "",
    ),
    # "a 4-panel comic" -> "a single-panel comic"
    Rewrite(
        re.compile(
            r"(?<![\w.])(?P<n>\d{1,2}|two|three|four|five|six|seven|eight|nine|ten|twelve)-"
            r"(?P<w>panel|frame|image|picture|shot|part|page|step|scene)\b",
            re.IGNORECASE,
        ),
        r"single-\g<w>",
    ),
    # "one image for each season": one image per variant, said of the whole group
    Rewrite(
        re.compile(
            rf"\b(?:one|an?)\s+{EN_IMAGE_NOUN}\s+(?:for|per)\s+(?:each|every)(?:\s+(?:of\s+the\s+)?[a-z]+)?",
            re.IGNORECASE,
        ),
        "",
    ),
    # "a 3x3 grid of icons": a grid's cells are the images, whatever they show
    Rewrite(
        re.compile(
            rf"{_EN_DET}[1-4]\s*[x×]\s*[1-4]\s+grid\s+of\s+(?P<fill>(?:(?:{EN_FILLER})\s+){{0,2}})"
            r"(?P<noun>[a-z]+s)\b",
            re.IGNORECASE,
        ),
        None,
    ),
    # "a set of four watercolor landscapes", "a 2x2 grid of cat portraits", "a series of 6 scenes"
    Rewrite(
        re.compile(
            rf"{_EN_DET}(?:(?:[1-4]\s*[x×]\s*[1-4]\s+)?{_EN_CONTAINER})\s+of\s+(?:(?P<n>{EN_NUM})\s+)?{_EN_PHRASE}",
            re.IGNORECASE,
        ),
        None,
    ),
    # "a set of four", "a 2x2 grid", "a triptych": the container alone
    Rewrite(
        re.compile(
            rf"\b(?:(?:a|an|the)\s+)?(?:{_EN_CONTAINER}\s+of\s+(?P<n>{EN_NUM})\b|[1-4]\s*[x×]\s*[1-4]\s+grid\b"
            r"|diptych\b|triptych\b)",
            re.IGNORECASE,
        ),
        "an image",
    ),
    # "a series of" before anything else ("a series of the four seasons")
    Rewrite(re.compile(r"\b(?:a|an)\s+(?:series|sequence)\s+of\s+", re.IGNORECASE), ""),
    # "4 images", "four different pictures", "a couple of photos"
    Rewrite(
        re.compile(rf"{_EN_DET}(?<![\w.,:/$¥€£#%+×-])(?P<n>{EN_NUM})\s+{_EN_PHRASE}", re.IGNORECASE),
        None,
    ),
    # "several pictures", "multiple angles", "some variations"
    Rewrite(
        re.compile(
            rf"\b(?:multiple|several|a few|various|many|some|different|more|numerous)\s+{_EN_PHRASE}",
            re.IGNORECASE,
        ),
        None,
    ),
    Rewrite(re.compile(r"\b(?P<noun>variations|variants|alternatives)\b", re.IGNORECASE), None),
    Rewrite(re.compile(r"\bstoryboards?\b", re.IGNORECASE), "scene"),
    Rewrite(re.compile(r"\b(?P<w>sticker|emoji)\s+(?:pack|set)\b", re.IGNORECASE), r"\g<w>"),
    Rewrite(re.compile(r"\bcarousel\b", re.IGNORECASE), "image"),
    Rewrite(
        re.compile(r"\b(?P<w>photo|image|picture|illustration|poster|comic|art)\s+series\b(?!\s+of\b)", re.IGNORECASE),
        r"\g<w>",
    ),
)

EN_GROUP_FILLERS: Final = frozenset(
    {"different", "distinct", "separate", "unique", "various", "individual", "varied", "more", "other"}
)
"""Fillers that only make sense for several images; one image's noun phrase drops them."""
EN_VOWEL_SOUND: Final = re.compile(r"^(?:[aeio]|u(?!ni|se|sa|su|ro))", re.IGNORECASE)

CN_VACUOUS: Final = re.compile(r"^(?:请|帮我|给我|为我|麻烦)*(?:生成|画|绘制|创作|制作|设计|做)?(?:一下)?$")
EN_VACUOUS: Final = re.compile(
    r"^(?:please\s+)?(?:generate|create|make|draw|render|paint|design|produce|give|show)?(?:\s+(?:me|us))?$",
    re.IGNORECASE,
)
"""A base left with only a verb says nothing: the image's prompt is then its variant alone."""
