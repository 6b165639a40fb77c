"""Tests for seedream_server.planner.counting: numerals, explicit counts and series words."""

from __future__ import annotations

import pytest

from seedream_server.planner.counting import cn_int, en_int, explicit_count, has_series_word, is_chinese


@pytest.mark.parametrize(
    ("token", "value"),
    [("3", 3), ("三", 3), ("两", 2), ("十", 10), ("十二", 12), ("二十", 20), ("三十五", 35), ("两三", 3)],
)
def test_cn_int_reads_numerals(token: str, value: int) -> None:
    assert cn_int(token) == value


@pytest.mark.parametrize("token", ["十十", "二二二", "百", "三十五六"])
def test_cn_int_rejects_what_is_not_a_numeral(token: str) -> None:
    assert cn_int(token) is None


@pytest.mark.parametrize(("token", "value"), [("4", 4), ("Four", 4), ("a  dozen", 12), ("a pair of", 2)])
def test_en_int_reads_numbers(token: str, value: int) -> None:
    assert en_int(token) == value
    assert en_int("lots") is None


def test_strong_count_beats_an_earlier_weak_one() -> None:
    count = explicit_count("three different logo designs, 2 images each")
    assert count is not None and (count.value, count.strong) == (2, True)
    weak = explicit_count("three different logo designs")
    assert weak is not None and (weak.value, weak.strong) == (3, False)


@pytest.mark.parametrize(
    ("text", "value"),
    [("a 3x4 grid of icons", 12), ("a diptych of the sea", 2), ("a triptych", 3), ("每个季节一张，共四季", None)],
)
def test_grids_polyptychs_and_per_each(text: str, value: int | None) -> None:
    count = explicit_count(text)
    assert (count.value if count else None) == value


def test_series_words_and_script() -> None:
    assert has_series_word("一组女孩的写真") and has_series_word("a storyboard")
    assert not has_series_word("一组沙发放在客厅里")
    assert is_chinese("一只猫 cat") and not is_chinese("a cat 猫") and not is_chinese("3 + 4")
