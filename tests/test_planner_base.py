"""Tests for seedream_server.planner.base: GroupPlan, the Planner ABC and the max_images range."""

from __future__ import annotations

import pytest

from seedream_server.planner import MAX_GROUP_IMAGES, GroupPlan, Planner
from seedream_server.planner.base import check_max_images


def test_group_plan_needs_a_prompt() -> None:
    with pytest.raises(ValueError):
        GroupPlan(())
    assert GroupPlan(("a", "b"), "x").count == 2


def test_group_plan_defaults_and_is_frozen() -> None:
    plan = GroupPlan(("a",))
    assert plan.reason == "single" and plan.count == 1
    with pytest.raises(AttributeError):
        plan.prompts = ("b",)  # type: ignore[misc]


@pytest.mark.parametrize("cap", [1, MAX_GROUP_IMAGES])
def test_check_max_images_accepts_the_range(cap: int) -> None:
    check_max_images(cap)


@pytest.mark.parametrize("cap", [0, -1, MAX_GROUP_IMAGES + 1])
def test_check_max_images_rejects_outside(cap: int) -> None:
    with pytest.raises(ValueError, match=f"within 1..{MAX_GROUP_IMAGES}, got {cap}"):
        check_max_images(cap)


async def test_planner_is_abstract_and_aclose_is_optional() -> None:
    with pytest.raises(TypeError):
        Planner()  # type: ignore[abstract]

    class Fixed(Planner):
        async def plan(self, prompt: str, max_images: int, *, thinking: str | None = None) -> GroupPlan:
            return GroupPlan((prompt,) * max_images, "fixed")

    planner = Fixed()
    assert (await planner.plan("x", 2)).prompts == ("x", "x")
    await planner.aclose()  # the default holds nothing and returns
