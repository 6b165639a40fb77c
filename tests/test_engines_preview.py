"""The preview engine's pictures: deterministic, and labelled with what each image was asked for (its own
prompt's first line, shortened to fit), not a hash."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seedream_server.engines.base import ImageJob, ImageTask
from seedream_server.engines.preview import fit_line, label_font, render

FONT_SIZE = 16


def job(*prompts: str, width: int = 640, height: int = 360) -> ImageJob:
    tasks = tuple(ImageTask(index=i, prompt=p, seed=7 + i) for i, p in enumerate(prompts))
    return ImageJob(model="m", tasks=tasks, width=width, height=height, base_prompt=prompts[0], group=len(prompts) > 1)


def strip(image: Image.Image) -> np.ndarray:
    """The label strip's second line (the prompt), as pixels."""
    size = max(10, min(image.size) // 40)
    pad = max(2, size // 3)
    return np.asarray(image.crop((0, size + pad * 2, image.width, size * 2 + pad * 3)))


def test_a_short_prompt_is_printed_whole() -> None:
    font = label_font(FONT_SIZE)
    assert fit_line("a red fox in the snow", font, 1000) == "a red fox in the snow"
    assert fit_line("  spaced   out\tprompt ", font, 1000) == "spaced out prompt"


@pytest.mark.parametrize(
    "prompt", ["a lighthouse on a cliff at dawn " * 20, "生成3张女孩和奶牛玩偶在游乐园开心地坐过山车的图片" * 5]
)
def test_a_long_prompt_is_shortened_to_fit(prompt: str) -> None:
    font = label_font(FONT_SIZE)
    line = fit_line(prompt, font, 300)
    assert line.endswith("...") and font.getlength(line) <= 300
    assert prompt.startswith(line.removesuffix("..."))
    assert len(line) > 10  # as much as fits, not a stub


def test_only_the_first_line_is_printed_and_more_lines_are_marked() -> None:
    font = label_font(FONT_SIZE)
    assert fit_line("\n\n  first line\nsecond line", font, 1000) == "first line..."


def test_each_image_shows_its_own_prompt_deterministically() -> None:
    group = job("a fox, morning", "a fox, noon", "a fox, evening")
    images = [render(group, task) for task in group.tasks]
    again = render(group, group.tasks[1])
    assert np.array_equal(np.asarray(images[1]), np.asarray(again))  # same job, same pixels
    lines = [strip(image) for image in images]
    assert not np.array_equal(lines[0], lines[1]) and not np.array_equal(lines[1], lines[2])
    # the prompt is drawn: the line has light text on the black strip
    assert all(line.max() > 150 for line in lines)


def test_the_label_depends_on_the_prompt_text_not_only_its_length() -> None:
    a = render(job("abcdefgh"), job("abcdefgh").tasks[0])
    b = render(job("zyxwvuts"), job("zyxwvuts").tasks[0])
    assert not np.array_equal(strip(a), strip(b))
