"""Tests for seedream_server.planner.plan: the rules as a table of Chinese and English prompts, the
caps, and the RulePlanner that applies them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from seedream_server.planner import (
    DEFAULT_SERIES_COUNT,
    MAX_GROUP_IMAGES,
    GroupPlan,
    Planner,
    RulePlanner,
    plan_group,
)

SEED_PROMPT = "生成3张女孩和奶牛玩偶在游乐园开心地坐过山车的图片,涵盖早晨、中午、晚上"

# (prompt, expected number of images with max_images=15, expected variants or None)
CASES: list[tuple[str, int, tuple[str, ...] | None]] = [
    # --- Chinese: explicit counts
    ("生成3张可爱小狗的图片", 3, None),
    ("画三幅山水画", 3, None),
    ("两张猫咪在沙发上睡觉的照片", 2, None),
    ("生成十二张城市夜景图", 12, None),
    ("帮我设计三款咖啡包装", 3, None),
    ("四格漫画：小猫钓鱼", 4, None),
    ("九宫格头像，同一个女孩", 9, None),
    ("六宫格表情包", 6, None),
    ("生成两三张海边日落的照片", 3, None),
    ("一个女孩的三个表情：开心、难过、生气", 3, ("开心", "难过", "生气")),
    # --- Chinese: enumerations
    (SEED_PROMPT, 3, ("早晨", "中午", "晚上")),
    ("生成一组图片，分别是春、夏、秋、冬", 4, ("春", "夏", "秋", "冬")),
    ("一个小女孩在公园里放风筝，画面依次为日出、正午、黄昏", 3, ("日出", "正午", "黄昏")),
    ("生成一组表情包：开心、难过、生气、惊讶", 4, ("开心", "难过", "生气", "惊讶")),
    (
        "生成三张图片：1. 早晨的海边 2. 中午的沙滩 3. 夜晚的灯塔",
        3,
        ("早晨的海边", "中午的沙滩", "夜晚的灯塔"),
    ),
    ("第一张是早晨，第二张是中午，第三张是晚上", 3, ("早晨", "中午", "晚上")),
    ("分镜1：主角出门；分镜2：遇到朋友；分镜3：一起吃饭", 3, ("主角出门", "遇到朋友", "一起吃饭")),
    ("早晨、中午、晚上的城市天际线", 3, ("早晨", "中午", "晚上")),
    ("一棵树的春夏秋冬", 4, ("春", "夏", "秋", "冬")),
    ("请生成一组插画，包括猫、狗、兔子", 3, ("猫", "狗", "兔子")),
    ("生成一组图，女孩在森林里分别遇到兔子、小鹿和狐狸", 3, ("兔子", "小鹿", "狐狸")),
    (
        "生成4张图，画面分别展示春天的樱花、夏天的海滩、秋天的枫叶、冬天的雪景",
        4,
        ("春天的樱花", "夏天的海滩", "秋天的枫叶", "冬天的雪景"),
    ),
    ("生成3张图：猫、狗、兔子", 3, ("猫", "狗", "兔子")),
    ("生成2张图片,涵盖早晨、中午、晚上", 2, ("早晨", "中午")),
    # --- Chinese: series words, default count
    ("生成一组女孩的写真", DEFAULT_SERIES_COUNT, None),
    ("一组分镜，讲述小猫的一天", DEFAULT_SERIES_COUNT, None),
    ("系列插画：城市里的猫", DEFAULT_SERIES_COUNT, None),
    ("生成几张海报", DEFAULT_SERIES_COUNT, None),
    ("用连环画讲述龟兔赛跑的故事", DEFAULT_SERIES_COUNT, None),
    # --- Chinese: negatives
    ("一只猫坐在窗台上", 1, None),
    ("3D风格的小熊，2K分辨率，16:9", 1, None),
    ("2025年3月5日的北京街头", 1, None),
    ("价格¥99的咖啡杯，旁边写着3.5元", 1, None),
    ("一个3岁的小男孩在吹蜡烛", 1, None),
    ("第一名的奖杯放在桌上", 1, None),
    ("两只猫在草地上玩", 1, None),
    ("一个果篮，里面有苹果、香蕉、橙子", 1, None),
    ("画一个时钟，显示3点15分，旁边是50%的进度条", 1, None),
    ("用一张图展示春夏秋冬", 1, None),
    ("要求：1. 高清 2. 色彩明亮 3. 无文字", 1, None),
    ("苹果15系列手机放在木桌上", 1, None),
    ("一组沙发放在客厅里", 1, None),
    ("一张桌子上放着一盆花", 1, None),
    # --- English: explicit counts
    ("Generate 4 images of a lighthouse", 4, None),
    ("four pictures of a cat", 4, None),
    ("a set of four watercolor landscapes", 4, None),
    ("Make a set of four", 4, None),
    ("a series of 6 illustrations of a fox", 6, None),
    ("a 4-panel comic about a cat", 4, None),
    ("three different logo designs for a bakery", 3, None),
    ("a 2x2 grid of cat portraits", 4, None),
    ("a triptych of the sea", 3, None),
    ("A storyboard with 6 frames showing a chef cooking", 6, None),
    # --- English: enumerations
    ("A girl riding a roller coaster in the morning, noon and night", 3, ("morning", "noon", "night")),
    ("A tree in spring, summer, autumn and winter", 4, ("spring", "summer", "autumn", "winter")),
    ("Draw a fox, covering spring, summer, autumn and winter", 4, ("spring", "summer", "autumn", "winter")),
    (
        "Create 3 posters for a coffee shop: espresso, latte and cappuccino",
        3,
        ("espresso", "latte", "cappuccino"),
    ),
    (
        "Image 1: a boy waking up. Image 2: the boy eating breakfast. Image 3: the boy at school.",
        3,
        ("a boy waking up", "the boy eating breakfast", "the boy at school"),
    ),
    ("3 images: 1. morning 2. noon 3. night", 3, ("morning", "noon", "night")),
    (
        "one image for each season: spring, summer, autumn, winter",
        4,
        ("spring", "summer", "autumn", "winter"),
    ),
    ("Make two versions: one realistic, one cartoon", 2, ("one realistic", "one cartoon")),
    # --- English: series words
    ("a storyboard of a space adventure", DEFAULT_SERIES_COUNT, None),
    ("several pictures of a sunset", DEFAULT_SERIES_COUNT, None),
    ("Create variations of this logo", DEFAULT_SERIES_COUNT, None),
    ("Make a series of the four seasons", 4, ("spring", "summer", "autumn", "winter")),
    # --- English: negatives
    ("two cats playing with yarn", 1, None),
    ("a 4K photo of a 3D robot at 16:9", 1, None),
    ("A 1080p wallpaper of Tokyo at night", 1, None),
    ("Draw a cat at 3 pm wearing a $5 hat, 50% off sale", 1, None),
    ("3 cats and 2 dogs in a park on March 5, 2025", 1, None),
    ("a bowl of apples, bananas and oranges", 1, None),
    ("a poster showing a cat, a dog and a bird", 1, None),
    ("a set of four mugs on a table", 1, None),
    ("Generate a single image of a castle", 1, None),
    ("the first place trophy, 2nd edition, a 5-year-old boy", 1, None),
    ('a poster with the text "TOP 10 PHOTOS"', 1, None),
    ("海报上写着“买两张送一张”", 1, None),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 45
    assert len({prompt for prompt, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("prompt", "count", "variants"), CASES, ids=[c[0][:40] for c in CASES])
def test_plan_group_table(prompt: str, count: int, variants: tuple[str, ...] | None) -> None:
    plan = plan_group(prompt, 15)
    assert plan.count == count, plan
    assert plan.reason
    if count == 1:
        assert plan.prompts == (prompt,)
        return
    assert len(set(plan.prompts)) == count, "per-image prompts must be distinct"
    sep = "，" if any("\u4e00" <= ch <= "\u9fff" for ch in prompt) else ", "
    if variants is not None:
        # each image names its own variant (in place of the list, or after the shared description)
        for image_prompt, variant in zip(plan.prompts, variants, strict=True):
            assert variant in image_prompt, (image_prompt, variant)
    else:
        # each image is numbered by its place in the group, never with the total
        for i, image_prompt in enumerate(plan.prompts, start=1):
            numbering = f"第{i}张" if sep == "，" else f"image {i}"
            assert image_prompt.endswith(sep + numbering), image_prompt


def test_seed_example_gives_exactly_morning_noon_night() -> None:
    plan = plan_group(SEED_PROMPT, 3)
    base = "生成女孩和奶牛玩偶在游乐园开心地坐过山车的图片"
    assert plan.prompts == (f"{base}，早晨", f"{base}，中午", f"{base}，晚上")
    assert plan.reason == "explicit count 3"
    # the same with full-width punctuation
    assert plan_group(SEED_PROMPT.replace(",", "，"), 15).prompts == plan.prompts


def test_count_beats_enumeration_and_pads_with_numbers() -> None:
    plan = plan_group("生成5张图片,涵盖早晨、中午、晚上", 15)
    assert plan.count == 5
    assert len(set(plan.prompts)) == 5
    assert [p.split("，")[1] for p in plan.prompts] == ["早晨", "中午", "晚上", "早晨", "中午"]
    assert plan.prompts[3] == "生成图片，早晨，第4张"
    english = plan_group("5 images of a street in the morning, noon and night", 15)
    assert english.count == 5
    assert english.prompts[4] == "an image of a street in the noon, image 5"


@pytest.mark.parametrize("cap", range(1, 16))
def test_max_images_caps(cap: int) -> None:
    plan = plan_group("生成15张小狗的照片", cap)
    assert plan.count == cap
    if cap == 1:
        assert plan.prompts == ("生成15张小狗的照片",)
    else:
        assert plan.prompts[-1] == f"生成小狗的照片，第{cap}张"
        assert "capped" in plan.reason or cap == 15


def test_max_images_caps_enumerations_and_series() -> None:
    assert plan_group(SEED_PROMPT, 2).prompts[-1].endswith("，中午")
    assert plan_group("a storyboard of a space adventure", 3).count == 3
    assert plan_group("Generate 20 images of a cat", 15).count == 15
    assert plan_group("九宫格头像", 1).prompts == ("九宫格头像",)


@pytest.mark.parametrize("cap", [0, -1, 16])
def test_max_images_out_of_range(cap: int) -> None:
    with pytest.raises(ValueError, match="max_images"):
        plan_group("生成3张图", cap)


def test_deterministic() -> None:
    first = [plan_group(prompt, 15) for prompt, _, _ in CASES]
    second = [plan_group(prompt, 15) for prompt, _, _ in reversed(CASES)]
    assert first == list(reversed(second))
    # planning other prompts at other caps in between leaves no state behind
    interleaved = []
    for prompt, _, _ in CASES:
        plan_group(prompt, 2)
        interleaved.append(plan_group(prompt, 15))
    assert interleaved == first


@pytest.mark.parametrize("hash_seed", ["1", "2"])
def test_plans_do_not_depend_on_the_hash_seed(hash_seed: str) -> None:
    """Set and dict orders change with PYTHONHASHSEED: a fresh interpreter must plan the same."""
    script = (
        "import json, sys\n"
        "from seedream_server.planner import plan_group\n"
        "prompts = json.loads(sys.stdin.read())\n"
        "print(json.dumps([[list(p.prompts), p.reason] for p in (plan_group(x, 15) for x in prompts)]))\n"
    )
    prompts = [prompt for prompt, _, _ in CASES]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(prompts), capture_output=True, text=True, env=env, check=True
    )
    here = [[list(p.prompts), p.reason] for p in (plan_group(x, 15) for x in prompts)]
    assert json.loads(done.stdout) == here


def test_single_and_empty_prompts_are_unchanged() -> None:
    for prompt in ["", "   ", "一只猫。", "A cat on a mat."]:
        plan = plan_group(prompt, 15)
        assert plan == GroupPlan((prompt,), "single")
        assert plan.count == 1


@pytest.mark.parametrize(
    ("prompt", "asked", "last_of_four"),
    [
        ("生成6张小狗在草地上奔跑的照片", 6, "生成小狗在草地上奔跑的照片，第4张"),
        ("Generate 6 images of a lighthouse at dusk", 6, "Generate an image of a lighthouse at dusk, image 4"),
    ],
)
async def test_rule_planner_wraps_plan_group(prompt: str, asked: int, last_of_four: str) -> None:
    planner: Planner = RulePlanner()
    assert await planner.plan(SEED_PROMPT, 3) == plan_group(SEED_PROMPT, 3)
    # exactly plan_group's prompts, at the full cap and at a cap below what the prompt asks
    full = await planner.plan(prompt, MAX_GROUP_IMAGES)
    assert full.count == asked
    assert full.prompts == plan_group(prompt, MAX_GROUP_IMAGES).prompts
    capped = await planner.plan(prompt, 4)
    assert capped.prompts == plan_group(prompt, 4).prompts
    assert capped.count == 4
    assert capped.prompts[-1] == last_of_four
    assert capped.reason == f"explicit count {asked}, capped at 4"
    assert (await planner.plan(prompt, 1)).prompts == (prompt,)
    with pytest.raises(ValueError, match="max_images"):
        await planner.plan(prompt, MAX_GROUP_IMAGES + 1)
    await planner.aclose()


# --- per-image wording: one image's prompt must not ask a real model for a group -------------

# Words that ask for several images (or several panels inside one image), checked outside quotes.
_GROUP_WORDS = re.compile(
    r"(?<![第每\d])(?:\d{1,2}|[两二三四五六七八九十]{1,3})\s*(?:张|幅|宫格|格|款|组|连拍|帧|个(?:画面|场景|镜头|表情|版本)"
    r"|种(?:风格|配色|版本))"
    r"|共\s*(?:\d|[两二三四五六七八九十])|一组|一系列|系列|组图|套图|分镜|故事板|连环画(?!风)|表情包|多张|多幅|几张|几幅"
    r"|\b(?:two|three|four|five|six|seven|eight|nine|ten|twelve|\d{1,2})[\s-]+(?:\w+\s+){0,2}"
    r"(?:images?|pictures?|photos?|panels?|frames?|illustrations?|posters?|stickers?|designs?|versions?|shots?)\b"
    r"|\b(?:images|pictures|photos|panels|frames|illustrations|posters|stickers|designs|versions|variations"
    r"|portraits|landscapes|scenes)\b|\b(?:set|series|sequence|collection|grid|pack|batch) of\b"
    r"|\bstoryboards?\b|\b(?:diptych|triptych)\b|\bof \d{1,2}\b|\bfor each\b|每个季节",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"“[^”]*”|\"[^\"]*\"")

# (prompt, count, the first image's prompt): the form, in both languages
WORDING: list[tuple[str, int, str]] = [
    (SEED_PROMPT, 3, "生成女孩和奶牛玩偶在游乐园开心地坐过山车的图片，早晨"),
    ("生成3张可爱小狗的图片", 3, "生成可爱小狗的图片，第1张"),
    ("四格漫画：小猫钓鱼", 4, "单格漫画：小猫钓鱼，第1张"),
    ("九宫格头像，同一个女孩", 9, "头像，同一个女孩，第1张"),
    ("早晨、中午、晚上的城市天际线", 3, "早晨的城市天际线"),
    ("生成一组表情包：开心、难过、生气、惊讶", 4, "生成表情，开心"),
    ("一组分镜，讲述小猫的一天", DEFAULT_SERIES_COUNT, "镜头画面，讲述小猫的一天，第1张"),
    ("用连环画讲述龟兔赛跑的故事", DEFAULT_SERIES_COUNT, "用连环画风格的单幅画面讲述龟兔赛跑的故事，第1张"),
    ("从不同角度拍摄一辆车，生成4张", 4, "从一个角度拍摄一辆车，第1张"),
    ("每个季节一张，一棵树：春、夏、秋、冬", 4, "一棵树，春"),
    ("生成4张一棵树的四季", 4, "生成一棵树的春天"),
    ("生成3张海报，写着“三张海报”", 3, "生成海报，写着“三张海报”，第1张"),
    ("a set of four stickers of a cat", 4, "a sticker of a cat, image 1"),
    ("Generate 4 images of a lighthouse", 4, "Generate an image of a lighthouse, image 1"),
    ("Four different pictures of a cat in 4K", 4, "A picture of a cat in 4K, image 1"),
    ("a 4-panel comic about a cat", 4, "a single-panel comic about a cat, image 1"),
    ("A storyboard with 6 frames showing a chef cooking", 6, "A scene showing a chef cooking, image 1"),
    ("a story told in 4 panels about a frog", 4, "a story told about a frog, image 1"),
    ("A tree in spring, summer, autumn and winter", 4, "A tree in spring"),
    ("one image for each season: spring, summer, autumn, winter", 4, "spring"),
    ("Create variations of this logo", DEFAULT_SERIES_COUNT, "Create a variation of this logo, image 1"),
    ("a 2x2 grid of cat portraits", 4, "a cat portrait, image 1"),
    ("a series of 4 scenes showing a seed growing", 4, "a scene showing a seed growing, image 1"),
    ("3 images of apples, bananas and oranges", 3, "an image of apples"),
    ('Generate 3 posters with the text "3 POSTERS"', 3, 'Generate a poster with the text "3 POSTERS", image 1'),
]


def test_the_group_word_detector_sees_the_group_words() -> None:
    for prompt in [
        "生成3张猫",
        "三幅",
        "两张",
        "四格漫画",
        "一组写真",
        "分镜",
        "a set of four",
        "4 images",
        "a series of 6",
    ]:
        assert _GROUP_WORDS.search(prompt), prompt
    for prompt in ["第3张", "一只猫", "image 3", "a picture of a cat", "two cats", "3D"]:
        assert not _GROUP_WORDS.search(prompt), prompt


@pytest.mark.parametrize(("prompt", "count", "first"), WORDING, ids=[w[0][:40] for w in WORDING])
def test_per_image_prompt_form(prompt: str, count: int, first: str) -> None:
    plan = plan_group(prompt, 15)
    assert plan.count == count
    assert plan.prompts[0] == first


GROUP_CASES = [(p, c, v) for p, c, v in CASES if c > 1] + [(p, c, None) for p, c, _ in WORDING]


@pytest.mark.parametrize(("prompt", "count", "variants"), GROUP_CASES, ids=[g[0][:40] for g in GROUP_CASES])
def test_per_image_prompts_carry_no_count_words(prompt: str, count: int, variants: tuple[str, ...] | None) -> None:
    """No image of a group asks for several images: no count or series word, no other variants."""
    plan = plan_group(prompt, 15)
    assert plan.count == count
    for i, image_prompt in enumerate(plan.prompts):
        assert image_prompt.strip(), plan
        found = _GROUP_WORDS.search(_QUOTED.sub("", image_prompt))
        assert found is None, (image_prompt, found and found[0])
        # read again by the planner, each image's prompt is one image
        assert plan_group(image_prompt, 15).count == 1, image_prompt
        if variants is not None:
            own = variants[i % len(variants)]
            others = [v for v in variants if v not in own and own not in v]
            assert not [v for v in others if v in image_prompt], (image_prompt, others)


def test_per_image_prompts_stay_in_the_users_script() -> None:
    """A Chinese group's images are worded in Chinese, an English group's in English."""
    for prompt, count, _ in CASES:
        plan = plan_group(prompt, 15)
        if count == 1:
            continue
        chinese = any("\u4e00" <= ch <= "\u9fff" for ch in prompt)
        for image_prompt in plan.prompts:
            assert any("\u4e00" <= ch <= "\u9fff" for ch in image_prompt) == chinese or image_prompt.isascii()
