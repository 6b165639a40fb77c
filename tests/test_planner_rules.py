"""Tests for seedream_server.planner.rules: the tables keep the invariants the matchers rely on."""

from __future__ import annotations

from seedream_server.planner import MAX_GROUP_IMAGES
from seedream_server.planner.rules import (
    CIRCLED,
    EN_NUMBERS,
    FOLD,
    MAX_COUNT,
    MIN_LIST_ITEMS,
    PTYCH_PANELS,
    ListRank,
    Strength,
)


def test_fold_maps_full_width_to_ascii_one_for_one() -> None:
    wide = "，：；！？（）０９ＡＺａｚ\u3000～"
    folded = wide.translate(FOLD)
    assert folded == ",:;!?()09AZaz ~"
    assert len(folded) == len(wide)
    assert "中文、。".translate(FOLD) == "中文、。"


def test_number_tables_stay_within_the_count_range() -> None:
    assert all(1 <= v <= MAX_COUNT for v in EN_NUMBERS.values())
    assert len(CIRCLED) >= MAX_GROUP_IMAGES  # a numbered list can name every image of a full group
    assert all(n >= MIN_LIST_ITEMS for n in PTYCH_PANELS.values())


def test_enum_orders_decide_the_best_list() -> None:
    assert Strength.STRONG < Strength.WEAK < Strength.PLAIN
    assert list(ListRank) == sorted(ListRank)
    assert min(ListRank) == ListRank.NUMBERED and max(ListRank) == ListRank.CANONICAL
