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

DEFAULT_SERIES_COUNT: Final = 4
"""Images planned for a series word ("一组", "storyboard") that comes without a number."""

_QUOTE_MASK: Final = "_"  # what quoted text is masked with, one for one, before counting


def _join(base: str, suffix: str, chinese: bool) -> str:
    base = base.rstrip(rules.TRAILING_PUNCT)
    if not base:
        return suffix
    return f"{base}{'，' if chinese else ', '}{suffix}"


def _numbering(index: int, total: int, chinese: bool) -> str:
    return f"第{index}张/共{total}张" if chinese else f"image {index} of {total}"


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
    and must be within 1..15. A single-image plan keeps the prompt unchanged.
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

    # 3. one prompt per image: the shared description plus the variant (or its number)
    chinese = is_chinese(text)
    if not variants:
        prompts = [_join(prompt, _numbering(i + 1, total, chinese), chinese) for i in range(total)]
        return GroupPlan(tuple(prompts), reason)
    assert listed is not None
    base = prompt
    if listed.cut is not None:
        a, b = listed.cut
        base = prompt[:a].rstrip(rules.TRAILING_PUNCT) + prompt[b:]
    padded = total > len(variants)
    prompts = []
    for i in range(total):
        variant = variants[i % len(variants)]
        if padded:
            variant = _join(variant, _numbering(i + 1, total, chinese), chinese)
        prompts.append(_join(base, variant, chinese))
    return GroupPlan(tuple(prompts), reason)


class RulePlanner(Planner):
    """The deterministic rules of :func:`plan_group`."""

    async def plan(self, prompt: str, max_images: int) -> GroupPlan:
        return plan_group(prompt, max_images)
