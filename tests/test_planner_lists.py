"""Tests for seedream_server.planner.lists: the list finders and the choice among them."""

from __future__ import annotations

from seedream_server.planner.lists import (
    best_list,
    canonical_lists,
    clean_items,
    cn_lists,
    en_lists,
    numbered_list,
    sentences,
)
from seedream_server.planner.rules import MAX_ITEM_CHARS, ListRank, Strength


def test_clean_items_needs_two_distinct_short_items() -> None:
    assert clean_items([" a,", "b", "a", ""]) == ("a", "b")
    assert clean_items(["a", "a"]) == ()
    assert clean_items(["a", "x" * (MAX_ITEM_CHARS + 1)]) == ()


def test_sentences_split_at_ends_only() -> None:
    text = "一只猫。A dog. 3.5 kg!"
    assert [text[a:b] for a, b in sentences(text)] == ["一只猫", "A dog", " 3.5 kg"]


def test_numbered_list_spans_the_markers_and_skips_requirements() -> None:
    text = "生成三张图片:1. 早晨的海边 2. 中午的沙滩"
    found = numbered_list(text)
    assert found is not None
    assert found.items == ("早晨的海边", "中午的沙滩")
    assert (found.strength, found.rank) == (Strength.STRONG, ListRank.NUMBERED)
    assert found.cut == (text.index("1."), len(text))
    assert numbered_list("要求:1. 高清 2. 色彩明亮") is None


def test_cn_lists_trigger_strength_and_cut() -> None:
    text = "一只猫,分别是春、夏、秋"
    (found,) = cn_lists(text)
    assert found.items == ("春", "夏", "秋")
    assert (found.strength, found.rank) == (Strength.STRONG, ListRank.TRIGGERED)
    assert found.cut == (text.index("分别"), len(text))
    (weak,) = cn_lists("一组插画,包括猫、狗、兔子")
    assert weak.strength == Strength.WEAK
    (plain,) = cn_lists("一个果篮,里面有苹果、香蕉、橙子")
    assert (plain.strength, plain.rank) == (Strength.PLAIN, ListRank.RUN)


def test_en_lists_colon_trigger_and_runs() -> None:
    (colon,) = en_lists("3 posters: espresso, latte and cappuccino")
    assert colon.items == ("espresso", "latte", "cappuccino") and colon.rank == ListRank.COLON
    (run,) = en_lists("a tree in spring, summer and winter")
    assert run.items == ("spring", "summer", "winter") and run.strength == Strength.STRONG
    assert en_lists("a cat and a dog") == []


def test_best_list_prefers_strength_then_rank() -> None:
    assert [c.items for c in canonical_lists("春夏秋冬")] == [("春", "夏", "秋", "冬")]
    found = best_list("一棵树的春夏秋冬,分别是早晨、中午、晚上")
    assert found is not None and found.items == ("早晨", "中午", "晚上")
    assert best_list("一只猫") is None
