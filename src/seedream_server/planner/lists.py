"""Enumerations in a prompt: the list whose items become the images' variants.

Four finders, each returning :class:`ItemList` candidates, and :func:`best_list` choosing among them
by :class:`~.rules.Strength`, then :class:`~.rules.ListRank`, then position:

* numbered lists ("1. … 2. …", "①…", "第一张…", "Image 1: …");
* Chinese lists written with 、 (or with "，"/和 right after a strong trigger such as "分别是");
* English lists "a, b and c" (after a colon, after a trigger such as "covering", or on their own);
* canonical phrases that name their items ("春夏秋冬", "four seasons").

Pure functions over folded text; the patterns and limits are in :mod:`.rules`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Final

from . import rules
from .counting import cn_int
from .rules import ListRank, Strength

_DUN: Final = "、"  # the Chinese enumeration comma
_HALVES: Final = 2  # a split at one separator gives the text before it and the text after it


@dataclass(frozen=True)
class ItemList:
    """A list found in the prompt and what it says about the images."""

    items: tuple[str, ...]
    strength: Strength
    rank: ListRank
    start: int
    cut: tuple[int, int] | None = None  # span to drop from the base prompt, if the list is removable
    span: tuple[int, int] | None = None  # where a fixed phrase ("春夏秋冬") names the items


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def sentences(text: str) -> list[tuple[int, int]]:
    """The non-blank sentences of ``text`` as (start, end) offsets."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in rules.SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def clean_items(items: list[str]) -> tuple[str, ...]:
    """Strip, drop empties and duplicates; a list needs at least two distinct items."""
    out: list[str] = []
    for item in items:
        item = item.strip(rules.ITEM_STRIP)
        if item and item not in out and len(item) <= rules.MAX_ITEM_CHARS:
            out.append(item)
    return tuple(out) if len(out) >= rules.MIN_LIST_ITEMS else ()


def exclusive(items: tuple[str, ...]) -> bool:
    """Whether every item is a mutually exclusive state (a time of day, a season ...)."""
    return bool(items) and all(rules.EXCLUSIVE_CN.search(i) or rules.EXCLUSIVE_EN.search(i) for i in items)


def _split_once(pattern: re.Pattern[str], text: str) -> list[str] | None:
    """``text`` cut in two at the first match of ``pattern``, or None when it does not match."""
    pieces = pattern.split(text, maxsplit=1)
    return pieces if len(pieces) == _HALVES else None


# --------------------------------------------------------------------------------------------
# Numbered lists
# --------------------------------------------------------------------------------------------


def _marker_value(kind: str, token: str) -> int | None:
    if kind == "circled":
        return rules.CIRCLED.index(token) + 1
    return cn_int(token)


def numbered_list(text: str) -> ItemList | None:
    """The longest run of markers numbered 1, 2, 3 ... in one style, unless it lists requirements."""
    best: list[re.Match[str]] = []
    for marker in rules.MARKERS:
        chain: list[re.Match[str]] = []
        for m in marker.pattern.finditer(text):
            if _marker_value(marker.kind, m["n"]) == len(chain) + 1:
                chain.append(m)
        if len(chain) >= rules.MIN_LIST_ITEMS and len(chain) > len(best):
            best = chain
    if not best:
        return None
    head = text[: best[0].start()]
    if rules.REQUIREMENT_HEAD.search(head[-rules.REQUIREMENT_LOOKBEHIND :]):
        return None
    items = [text[a.end() : b.start()] for a, b in itertools.pairwise(best)]
    last_start = best[-1].end()
    end = rules.SENTENCE_END.search(text, last_start)
    last_end = end.start() if end else len(text)
    items.append(text[last_start:last_end])
    items = [rules.CN_ITEM_COPULA.sub("", i.strip(rules.ITEM_STRIP)) for i in items]
    cleaned = clean_items(items)
    if len(cleaned) != len(best):
        return None
    return ItemList(cleaned, Strength.STRONG, ListRank.NUMBERED, best[0].start(), (best[0].start(), last_end))


# --------------------------------------------------------------------------------------------
# Chinese lists
# --------------------------------------------------------------------------------------------


def _split_cn_last(parts: list[str]) -> list[str]:
    """Split "秋和冬" (the last piece of a list) into two items."""
    *head, last = parts
    pieces = _split_once(rules.CN_CONJ, last)
    if pieces is not None and pieces[0].strip() and pieces[1].strip():
        return [*head, *pieces]
    return parts


def _cn_colon_list(sentence: str, s_start: int) -> ItemList | None:
    """A list after a colon: "…四个场景：早晨、中午、晚上", or "风格：A，B，C" (commas only after a group word)."""
    colon = sentence.find(":")
    if colon < 0:
        return None
    head, body = sentence[:colon], sentence[colon + 1 :]
    group_head = bool(rules.GROUP_HEAD.search(head))
    first_clause = body.split(",")[0]
    if _DUN in first_clause:
        parts, extent = first_clause.split(_DUN), len(first_clause)
    else:
        parts, extent = (body.split(",") if group_head else []), len(body)
    if len(parts) < rules.MIN_LIST_ITEMS:
        return None
    parts = _split_cn_last(parts)
    items = clean_items([rules.CN_COUNT_TAIL.sub("", p) or p for p in parts])
    if not items:
        return None
    strength = Strength.STRONG if group_head else Strength.WEAK
    cut_end = s_start + colon + 1 + extent
    return ItemList(items, strength, ListRank.COLON, s_start + colon, (s_start + colon, cut_end))


def _cn_trigger_without_dun(
    text: str, trig: re.Match[str], abs_start: int, cut_start: int, s_end: int
) -> ItemList | None:
    """A strong trigger and no 、: "分别是早晨，中午，晚上" / "分别是早晨和晚上"."""
    rest = text[abs_start + trig.end() : s_end]
    pieces = rest.split(",")
    if len(pieces) < rules.MIN_LIST_ITEMS:
        pieces = rules.CN_CONJ.split(rest, maxsplit=1)
    pieces = _split_cn_last(pieces)
    if len(pieces) < rules.MIN_LIST_ITEMS or any(len(p.strip()) > rules.MAX_CN_TRIGGERED_ITEM_CHARS for p in pieces):
        return None
    items = clean_items(pieces)
    if not items:
        return None
    return ItemList(items, Strength.STRONG, ListRank.TRIGGERED, abs_start + trig.start(), (cut_start, s_end))


def _cn_dun_run(
    chunks: list[str], trig: re.Match[str] | None, abs_start: int, cut_start: int, clause_len: int
) -> ItemList | None:
    """A 、 run within a clause, after a trigger ("分别遇到兔子、小鹿和狐狸") or on its own."""
    slack = rules.CN_ITEM_SLACK_CHARS
    first, mids, last = chunks[0], chunks[1:-1], chunks[-1]
    last = rules.CN_COUNT_TAIL.sub("", last) or last
    mid_len = max((len(m.strip()) for m in mids), default=0)
    split_last = _split_once(rules.CN_CONJ, last)
    if split_last is not None and (not mids or len(split_last[0].strip()) <= mid_len + slack):
        tail_items = split_last
    else:
        tail_items = [last]
    if trig is not None and trig.end() <= len(first):
        first_item = first[trig.end() :].strip()
        k = max(len(i.strip()) for i in [*mids, *tail_items])
        if len(first_item) > k + slack:  # "分别遇到兔子、小鹿和狐狸": drop the verb
            first_item = first_item[-k:]
        strength = Strength.WEAK if trig["t"] in rules.CN_WEAK_TRIGGERS else Strength.STRONG
        items = clean_items([first_item, *mids, *tail_items])
        if not items:
            return None
        cut = (cut_start, abs_start + clause_len)
        return ItemList(items, strength, ListRank.TRIGGERED, abs_start + trig.start(), cut)
    # untriggered: the first item is as long as the others, the last stops at 的
    k = max([len(i.strip()) for i in [*mids, *tail_items[:-1]]] or [len(tail_items[-1].strip())])
    tail_items[-1] = rules.CN_LAST_ITEM_END.split(tail_items[-1])[0][: k + slack]
    first_item = first.strip()[-k:] if k else first
    items = clean_items([first_item, *mids, *tail_items])
    if not items:
        return None
    strength = Strength.STRONG if exclusive(items) else Strength.PLAIN
    return ItemList(items, strength, ListRank.RUN, abs_start)


def _cn_clause_list(text: str, clause: str, abs_start: int, s_end: int) -> ItemList | None:
    """The list of one clause (text between commas and colons) starting at ``abs_start``, if any."""
    triggers = list(rules.CN_TRIGGER.finditer(clause))
    trig = triggers[-1] if triggers else None
    # the text the list replaces: from the trigger, or from the clause start when only a word like
    # "画面" or "每张图" comes before the trigger
    cut_start = abs_start
    if trig is not None and not rules.CN_LIST_SUBJECT.fullmatch(clause[: trig.start()].strip()):
        cut_start = abs_start + trig.start()
    chunks = clause.split(_DUN)
    if len(chunks) >= rules.MIN_LIST_ITEMS:
        return _cn_dun_run(chunks, trig, abs_start, cut_start, len(clause))
    if trig is not None and trig["t"] not in rules.CN_WEAK_TRIGGERS:
        return _cn_trigger_without_dun(text, trig, abs_start, cut_start, s_end)
    return None


def cn_lists(text: str) -> list[ItemList]:
    """Lists written with 、 (or with "，"/和 right after a strong trigger) in Chinese text."""
    found: list[ItemList] = []
    for s_start, s_end in sentences(text):
        sentence = text[s_start:s_end]
        if not rules.CJK_RE.search(sentence):
            continue
        colon_list = _cn_colon_list(sentence, s_start)
        if colon_list is not None:
            found.append(colon_list)
            continue
        c_start = 0
        for clause in rules.CN_CLAUSE_SPLIT.split(sentence):
            abs_start = s_start + c_start
            c_start += len(clause)
            if clause in rules.CN_CLAUSE_SEPARATORS:
                continue
            clause_list = _cn_clause_list(text, clause, abs_start, s_end)
            if clause_list is not None:
                found.append(clause_list)
    return found


# --------------------------------------------------------------------------------------------
# English lists
# --------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


def _en_item(item: str) -> str:
    item = rules.EN_RESPECTIVELY.sub("", item)
    return rules.EN_LEADING_STOP.sub("", item.strip(rules.ITEM_STRIP)).strip(rules.ITEM_STRIP)


def _cut_at_stop(words: list[str]) -> list[str]:
    """Keep the words of a trailing item up to the first stop word after its first word."""
    for i, word in enumerate(words[1:], start=1):
        if rules.EN_STOP_WORD.match(word):
            return words[:i]
    return words


def _en_colon_list(sentence: str, s_start: int, s_end: int, respectively: bool) -> ItemList | None:
    """A list after a colon: "Create 3 posters: espresso, latte and cappuccino"."""
    colon = sentence.find(":")
    if colon < 0:
        return None
    head, body = sentence[:colon], sentence[colon + 1 :]
    *rest, last = body.split(",")
    parts = [*rest, *rules.EN_CONJ.split(last, maxsplit=1)]
    items = clean_items([_en_item(p) for p in parts])
    if not items or any(len(_words(i)) > rules.MAX_EN_COLON_ITEM_WORDS for i in items):
        return None
    strength = Strength.STRONG if rules.GROUP_HEAD.search(head) or respectively else Strength.WEAK
    return ItemList(items, strength, ListRank.COLON, s_start + colon, (s_start + colon, s_end))


def _en_triggered_list(sentence: str, s_start: int, s_end: int) -> ItemList | None:
    """A list after a trigger: "Draw a fox, covering spring, summer, autumn and winter"."""
    trig = rules.EN_TRIGGER.search(sentence)
    if trig is None:
        return None
    *rest, last = sentence[trig.end() :].split(",")
    pieces = _split_once(rules.EN_CONJ, last)
    parts = [*rest, last] if pieces is None else [*rest, pieces[0], " ".join(_cut_at_stop(_words(pieces[1])))]
    items = clean_items([_en_item(p) for p in parts])
    if not items or any(len(_words(i)) > rules.MAX_EN_TRIGGERED_ITEM_WORDS for i in items):
        return None
    return ItemList(items, Strength.STRONG, ListRank.TRIGGERED, s_start + trig.start(), (s_start + trig.start(), s_end))


def _en_run(parts: list[str], i: int, j: int, respectively: bool, start: int) -> ItemList | None:
    """The run from comma part ``i`` to part ``j`` (the one holding "and"/"or"), or None."""
    pre, post = rules.EN_CONJ.split(parts[j], maxsplit=1)
    middle = parts[i + 1 : j] + ([pre] if pre.strip() else [])
    k = max(1, max((len(_words(_en_item(m))) for m in middle), default=1))
    edge = k + rules.EN_ITEM_SLACK_WORDS
    first_words = _words(parts[i])
    first = " ".join(first_words[-edge:]) if len(first_words) > k else parts[i]
    last = " ".join(_cut_at_stop(_words(rules.EN_RESPECTIVELY.sub("", post)))[:edge])
    items = clean_items([_en_item(x) for x in [first, *middle, last]])
    if len(items) >= rules.MIN_EN_RUN_ITEMS or (respectively and len(items) >= rules.MIN_LIST_ITEMS):
        strength = Strength.STRONG if respectively or exclusive(items) else Strength.PLAIN
        return ItemList(items, strength, ListRank.RUN, start)
    return None


def _en_runs(sentence: str, s_start: int, respectively: bool) -> list[ItemList]:
    """Untriggered runs "a, b and c" (middle items short, the last after "and"/"or")."""
    found: list[ItemList] = []
    parts = sentence.split(",")
    i = 0
    while i < len(parts) - 1:
        j = i + 1
        while (
            j < len(parts)
            and not rules.EN_CONJ.search(parts[j])
            and len(_words(parts[j])) <= rules.MAX_EN_RUN_ITEM_WORDS
        ):
            j += 1
        if j >= len(parts) or not rules.EN_CONJ.search(parts[j]):
            i = j
            continue
        pre = rules.EN_CONJ.split(parts[j], maxsplit=1)[0]
        if len(_words(pre)) > rules.MAX_EN_RUN_ITEM_WORDS:
            i = j
            continue
        start = s_start + sum(len(p) + len(",") for p in parts[:i])
        run = _en_run(parts, i, j, respectively, start)
        if run is not None:
            found.append(run)
        i = j + 1
    return found


def en_lists(text: str) -> list[ItemList]:
    """Lists written "a, b and c" (or after a colon or a trigger) in English text."""
    found: list[ItemList] = []
    for s_start, s_end in sentences(text):
        sentence = text[s_start:s_end]
        if not rules.EN_WORD_RE.search(sentence):
            continue
        respectively = bool(rules.EN_RESPECTIVELY.search(sentence))
        first = _en_colon_list(sentence, s_start, s_end, respectively) or _en_triggered_list(sentence, s_start, s_end)
        if first is not None:
            found.append(first)
            continue
        found += _en_runs(sentence, s_start, respectively)
    return found


# --------------------------------------------------------------------------------------------
# Canonical phrases and the choice
# --------------------------------------------------------------------------------------------


def canonical_lists(text: str) -> list[ItemList]:
    """Fixed phrases that name their items ("春夏秋冬", "four seasons")."""
    return [
        ItemList(items, strength, ListRank.CANONICAL, m.start(), span=m.span())
        for pattern, items, strength in rules.CANONICAL
        for m in pattern.finditer(text)
    ]


def best_list(text: str) -> ItemList | None:
    """The list that decides the variants: strongest first, then by rank, then the earliest."""
    lists: list[ItemList] = []
    numbered = numbered_list(text)
    if numbered is not None:
        lists.append(numbered)
    lists += cn_lists(text)
    lists += en_lists(text)
    lists += canonical_lists(text)
    if not lists:
        return None
    return min(lists, key=lambda lst: (lst.strength, lst.rank, lst.start))
