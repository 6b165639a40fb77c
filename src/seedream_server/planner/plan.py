"""The rule planner: :func:`plan_group` reads the three signals of a prompt (an explicit count, a
series word, a list) and writes one prompt per image; :class:`RulePlanner` is the :class:`~.base.Planner`
that applies it. Pure and deterministic, no I/O.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from . import rules
from .base import GroupPlan, Planner, check_max_images
from .counting import explicit_count, has_series_word, is_chinese
from .lists import ItemList, best_list
from .rules import Strength
from .wording import VARIANT_SLOT, is_vacuous, one_image

DEFAULT_SERIES_COUNT: Final = 4
"""Images planned for a series word ("一组", "storyboard") that comes without a number."""

_QUOTE_MASK: Final = "_"  # what quoted text is masked with, one for one, before counting


def _join(base: str, suffix: str, chinese: bool) -> str:
    base = base.rstrip(rules.TRAILING_PUNCT)
    if not base:
        return suffix
    return f"{base}{'，' if chinese else ', '}{suffix}"


def _numbering(index: int, chinese: bool) -> str:
    """An image's place in the group, without the total: "共4张"/"of 4" would ask for a group again."""
    return f"第{index}张" if chinese else f"image {index}"


def _items_span(text: str, listed: ItemList) -> tuple[int, int] | None:
    """Where the list's items are written in ``text`` (so one variant can stand in their place)."""
    if listed.span is not None:
        start, end = listed.span
        the = rules.EN_THE_BEFORE.search(text, 0, start)
        return (the.start() if the else start), end
    at = listed.start
    first = -1
    for item in listed.items:
        found = text.find(item, at)
        if found < 0:
            return None
        first = found if first < 0 else first
        at = found + len(item)
    return first, at


def _shared(prompt: str, text: str, listed: ItemList | None) -> str:
    """The description every image shares: the prompt without its list (the variant's place is
    marked with :data:`~.wording.VARIANT_SLOT` when the list stands inside the sentence)."""
    if listed is None:
        return prompt
    if listed.cut is not None:
        a, b = listed.cut
        return prompt[:a].rstrip(rules.TRAILING_PUNCT) + prompt[b:]
    span = _items_span(text, listed)
    if span is None:
        return prompt
    a, b = span
    return prompt[:a] + VARIANT_SLOT + prompt[b:]


class _Decision(NamedTuple):
    total: int
    reason: str
    variants: tuple[str, ...]  # empty: the images are numbered instead
    explicit: bool  # the prompt wrote the number


def _decide(text: str, listed: ItemList | None) -> _Decision | None:
    """How many images and with which variants, from the three signals; None means one image."""
    # numbers and series words inside quotes are text to draw
    unquoted = rules.QUOTED.sub(lambda m: _QUOTE_MASK * len(m[0]), text)
    count = explicit_count(unquoted)
    if count is not None:
        variants: tuple[str, ...] = ()
        if listed is not None and (listed.strength != Strength.PLAIN or len(listed.items) == count.value):
            variants = listed.items
        return _Decision(count.value, f"explicit count {count.value}", variants, True)
    if listed is not None and listed.strength == Strength.STRONG:
        return _Decision(len(listed.items), "enumeration", listed.items, False)
    if not has_series_word(unquoted):
        return None
    if listed is not None and listed.strength == Strength.WEAK:
        return _Decision(len(listed.items), "series enumeration", listed.items, False)
    return _Decision(DEFAULT_SERIES_COUNT, "series default", (), False)


def plan_group(prompt: str, max_images: int) -> GroupPlan:
    """Plan the images of an ``auto`` group request from its prompt (pure and deterministic).

    ``max_images`` is the combined cap the caller computed, ``min(max_images, 15 - references)``,
    and must be within 1..15. A single-image plan keeps the prompt unchanged; each image of a group
    gets the shared description worded for one image (:mod:`.wording`) and its own variant or number.
    """
    check_max_images(max_images)
    text = prompt.translate(rules.FOLD)
    if not text.strip():
        return GroupPlan((prompt,), "single")

    # 1. read the three signals and 2. decide the number and the variants
    listed = best_list(text)
    decision = _decide(text, listed)
    if decision is None:
        return GroupPlan((prompt,), "single")
    total, reason, variants, explicit = decision
    if total > max_images:
        total, reason = max_images, f"{reason}, capped at {max_images}"
    if total <= 1:
        return GroupPlan((prompt,), reason if explicit else f"{reason}; single")

    # 3. one prompt per image (wording.py): the shared description, worded for one image, with
    #    the image's variant in place of the list or after it, or the image's number
    chinese = is_chinese(text)
    source = prompt.replace(VARIANT_SLOT, " ")  # the slot is ours alone (same length: offsets hold)
    shared = one_image(_shared(source, text, listed if variants else None))
    if variants and is_vacuous(shared.replace(VARIANT_SLOT, "")):
        shared = VARIANT_SLOT if VARIANT_SLOT in shared else ""
    padded = not variants or total > len(variants)
    prompts = []
    for i in range(total):
        variant = variants[i % len(variants)] if variants else ""
        if VARIANT_SLOT in shared:
            image_prompt = shared.replace(VARIANT_SLOT, variant)
        else:
            image_prompt = _join(shared, variant, chinese) if variant else shared
        if padded:
            image_prompt = _join(image_prompt, _numbering(i + 1, chinese), chinese)
        prompts.append(image_prompt)
    return GroupPlan(tuple(prompts), reason)


class RulePlanner(Planner):
    """The deterministic rules of :func:`plan_group`; ``thinking`` changes nothing (rules do not reason)."""

    async def plan(self, prompt: str, max_images: int, *, thinking: str | None = None) -> GroupPlan:
        return plan_group(prompt, max_images)
