"""One image's own prompt: the shared description of a group without the group's count and series
words, so that a real model reads it as ONE picture.

A text-to-image model takes "生成3张…", "四格漫画", "a set of four stickers" literally and draws three
panels, a four-panel strip or a sticker sheet inside one image. :func:`one_image` rewrites every such
phrase of a group prompt by the tables of :data:`~.wording_rules.CN_REWRITES` and :data:`~.wording_rules.EN_REWRITES`:

* Chinese count phrases are dropped, the verb and the noun stay: "生成3张可爱小狗的图片" ->
  "生成可爱小狗的图片", "帮我设计三款咖啡包装" -> "帮我设计咖啡包装", "九宫格头像" -> "头像"; a comic
  keeps its kind with one panel: "四格漫画" -> "单格漫画";
* English count phrases become one of their noun: "Generate 4 images of a lighthouse" -> "Generate an
  image of a lighthouse", "a set of four watercolor landscapes" -> "a watercolor landscape", "a
  4-panel comic" -> "a single-panel comic", "a storyboard with 6 frames showing …" -> "a scene
  showing …";
* series words name one item of the series: "一组" and "一系列" go, "分镜" -> "镜头画面", "表情包" ->
  "表情", "连环画" -> "连环画风格的单幅画面", "several pictures" -> "a picture", "variations" -> "a
  variation", "storyboard" -> "scene".

Text inside quotes is text to draw and is never rewritten. The rewrite is pure and deterministic.

How :func:`~.plan.plan_group` assembles each image's prompt from that wording (the choices, and why):

* the image's variant takes the place of the list when the list stands inside the sentence
  ("早晨、中午、晚上的城市天际线" -> "早晨的城市天际线", "A tree in spring, summer, autumn and
  winter" -> "A tree in spring"), or follows the shared description when the list was its own
  clause ("生成3张…的图片，涵盖早晨、中午、晚上" -> "生成…的图片，早晨"); the other variants never
  appear, a list of them would be drawn side by side;
* images without a variant (or beyond the variants) are numbered by their place only: "第2张",
  "image 2". The number keeps the prompts distinct and tells a reader which image is which; the
  total is left out on purpose, because "第2张/共4张" or "image 2 of 4" names the group again and a
  model may answer it with a four-panel sheet. An ordinal before 张 is not a count ("第" is not a
  number of images) and "image 2" is a label, not "2 images";
* a base left with only a verb ("生成", "Make") is dropped and the variant stands alone;
* a single-image plan is the user's prompt, untouched.
"""

from __future__ import annotations

import re
from typing import Final

from . import rules as tables
from . import wording_rules as rules
from .counting import cn_int, en_int

VARIANT_SLOT: Final = "\ue000"
"""A private-use character that holds the place of an image's variant while the text around it is
rewritten (so that no rule rewrites the variant, and tidying never moves it)."""

_MIN_GROUP: Final = 2  # a count of one already names one image
_QUOTE_MASK: Final = "_"
_SPACES: Final = re.compile(r"[ \t]{2,}")
_SPACE_BEFORE_PUNCT: Final = re.compile(r"[ \t]+(?=[,.;:!?，。；：！？、])")
_DOUBLED_PUNCT: Final = re.compile(r"[，,、；;：:]\s*(?=[，,、；;：:。.!?！？]|$)")
_LEAD: Final = " \t\r\n。.，,；;！!？?、：:"
_CLAUSE: Final = re.compile(r"(?<=[，,；;。])")  # split after each clause end, keeping it


def _count(token: str) -> int | None:
    return cn_int(token) if token.isdigit() or not token.isascii() else en_int(token)


def _singular(noun: str) -> str:
    lower = noun.lower()
    if lower.endswith(("ches", "shes")):
        return noun[:-2]
    if lower.endswith("s") and not lower.endswith("ss"):
        return noun[:-1]
    return noun


def _article(word: str) -> str:
    return "an" if rules.EN_VOWEL_SOUND.match(word) else "a"


def _one_of(m: re.Match[str]) -> str:
    """ "4 different watercolor landscapes" -> "a watercolor landscape"."""
    groups = m.groupdict()
    fill = [w for w in (groups.get("fill") or "").split() if w.lower() not in rules.EN_GROUP_FILLERS]
    words = [*fill, _singular(m["noun"])]
    det = (groups.get("det") or "").strip().lower()
    return " ".join([det if det == "the" else _article(words[0]), *words])


def _replacement(rule: rules.Rewrite, m: re.Match[str]) -> str | None:
    """What one image says instead of the phrase ``m``, or None to keep it."""
    n = m.groupdict().get("n")
    if n is not None:
        value = _count(n)
        if value is None or value < _MIN_GROUP:
            return None
    out = _one_of(m) if rule.replacement is None else m.expand(rule.replacement)
    if out and m[0][:1].isupper():
        out = out[0].upper() + out[1:]
    return out


def _tidy(text: str) -> str:
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub("", text)
    text = _DOUBLED_PUNCT.sub("", text)
    return text.strip(_LEAD)


def one_image(prompt: str) -> str:
    """``prompt`` (the shared part of a group prompt) worded for one image of the group.

    The :data:`VARIANT_SLOT` character, if present, is kept where it is.
    """
    masked = tables.QUOTED.sub(lambda q: _QUOTE_MASK * len(q[0]), prompt.translate(tables.FOLD))
    edits: list[tuple[int, int, str]] = []
    for rule in (*rules.CN_REWRITES, *rules.EN_REWRITES):
        for m in rule.pattern.finditer(masked):
            if any(m.start() < end and start < m.end() for start, end, _ in edits):
                continue
            out = _replacement(rule, m)
            if out is not None:
                edits.append((m.start(), m.end(), out))
    pieces: list[str] = []
    at = 0
    for start, end, out in sorted(edits):
        pieces += [prompt[at:start], out]
        at = end
    pieces.append(prompt[at:])
    return _tidy(_drop_bare_verbs("".join(pieces)))


def _drop_bare_verbs(text: str) -> str:
    """Drop clauses a rewrite left with only a verb ("从不同角度拍摄一辆车，生成4张" -> "…，生成")."""
    clauses = _CLAUSE.split(text)
    kept = [c for c in clauses if not (c.strip() and is_vacuous(c))]
    return "".join(kept) if len(kept) < len(clauses) and any(c.strip(_LEAD) for c in kept) else text


def is_vacuous(base: str) -> bool:
    """Whether a rewritten base says nothing but a verb ("生成", "Make"): the variant then stands alone."""
    base = base.strip(_LEAD)
    return bool(rules.CN_VACUOUS.fullmatch(base) or rules.EN_VACUOUS.fullmatch(base))
