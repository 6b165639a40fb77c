"""Tests for seedream_server.planner.wording: one image's wording of a group prompt."""

from __future__ import annotations

import pytest

from seedream_server.planner.wording import VARIANT_SLOT, is_vacuous, one_image


@pytest.mark.parametrize(
    ("prompt", "one"),
    [
        ("生成3张可爱小狗的图片", "生成可爱小狗的图片"),
        ("画三幅山水画", "画山水画"),
        ("两张猫咪在沙发上睡觉的照片", "猫咪在沙发上睡觉的照片"),
        ("帮我设计三款不同的咖啡包装", "帮我设计咖啡包装"),
        ("四格漫画", "单格漫画"),
        ("九宫格的头像", "头像"),
        ("一个女孩的三个表情", "一个女孩的表情"),
        ("三种不同风格的猫", "一种风格的猫"),
        ("生成一组女孩的写真", "生成女孩的写真"),
        ("一系列城市插画", "城市插画"),
        ("生成几张海报", "生成海报"),
        ("生成一套表情包", "生成表情"),
        ("从不同角度拍摄一辆车，生成4张", "从一个角度拍摄一辆车"),
        ("一共5张，雪山", "雪山"),
        ("Generate 4 images of a lighthouse", "Generate an image of a lighthouse"),
        ("four different pictures of a cat", "a picture of a cat"),
        ("a couple of photos of Paris", "a photo of Paris"),
        ("a set of four watercolor landscapes", "a watercolor landscape"),
        ("the 3 sketches of a horse", "the sketch of a horse"),
        ("a 4-panel comic", "a single-panel comic"),
        ("a 3x3 grid of icons", "an icon"),
        ("a triptych of the sea", "an image of the sea"),
        ("several illustrations of an owl", "an illustration of an owl"),
        ("A storyboard with 6 frames showing a chef", "A scene showing a chef"),
        ("a sticker pack of a corgi", "a sticker of a corgi"),
        ("Create variations of this logo", "Create a variation of this logo"),
    ],
)
def test_one_image_rewrites_group_words(prompt: str, one: str) -> None:
    assert one_image(prompt) == one
    assert one_image(one) == one, "the wording of one image is stable"


@pytest.mark.parametrize(
    "prompt",
    [
        "一只猫坐在窗台上",
        "两只猫在草地上玩",
        "一张桌子上放着一盆花",
        "3D风格的小熊，2K分辨率，16:9",
        "第1张，雪山",
        "海报上写着“买两张送一张”",
        "一组沙发放在客厅里",
        "two cats playing with yarn",
        "a 5-year-old boy with 3 balloons",
        "a single image of a castle",
        "a set of mugs on a table",
        'a poster with the text "TOP 10 PHOTOS"',
        "a 4K photo at 16:9, image 2",
    ],
)
def test_one_image_keeps_what_is_not_a_group(prompt: str) -> None:
    assert one_image(prompt) == prompt


def test_one_image_keeps_the_variant_slot_where_it_is() -> None:
    assert one_image(f"生成3张{VARIANT_SLOT}的城市") == f"生成{VARIANT_SLOT}的城市"
    assert one_image(f"4 images of a tree in {VARIANT_SLOT}") == f"an image of a tree in {VARIANT_SLOT}"


@pytest.mark.parametrize(
    ("base", "vacuous"),
    [
        ("", True),
        ("生成", True),
        ("请帮我画", True),
        ("Make", True),
        ("generate me", True),
        ("生成图片", False),
        ("a cat", False),
    ],
)
def test_is_vacuous(base: str, vacuous: bool) -> None:
    assert is_vacuous(base) is vacuous


def test_a_prompt_holding_the_slot_character_plans_as_usual() -> None:
    from seedream_server.planner import plan_group

    plan = plan_group(f"早晨、中午、晚上的城市{VARIANT_SLOT}天际线", 15)
    assert plan.prompts[0] == "早晨的城市 天际线"
