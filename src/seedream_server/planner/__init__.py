"""Group planning for ``sequential_image_generation: "auto"``: how many images, and each one's prompt.

This package owns one decision (SPEC §5): given a prompt and the already-combined cap
(``min(max_images, 15 - len(references))``), how many images does the user want, and what should
each image's own prompt be? Its modules:

* :mod:`.base` -- the plug point the service calls: :class:`Planner` and :class:`GroupPlan`.
* :mod:`.plan` -- :func:`plan_group`, pure deterministic rules for Chinese and English prompts
  (no I/O), and :class:`RulePlanner` that applies them:

  1. explicit counts (:mod:`.counting`): "生成3张", "三幅", "两张", "四格漫画", "九宫格", "4 images",
     "four pictures", "a set of four", "a 4-panel comic". Only numbers attached to an image word
     count ("two cats" is one image of two cats; "3D", "2K", "16:9", dates, prices, ages, "第一"
     never count);
  2. enumerations (:mod:`.lists`): "涵盖早晨、中午、晚上", "分别是春、夏、秋、冬", "：A、B、C",
     "1. … 2. …", "第一张…第二张…", "in the morning, noon and night", ": a, b and c";
  3. series words with a default count (:mod:`.counting`): "一组", "系列图", "分镜", "组图", "连环画",
     "storyboard", "a series of images", "variations";
  4. otherwise one image, with the prompt unchanged.

  When a count and an enumeration both appear the count decides the number and the enumeration
  gives each image its variant (cycled, then numbered, when there are fewer variants than images).
  Each image's own prompt is worded for ONE image (:mod:`.wording`): the group's count and series
  words go ("生成3张…" -> "生成…", "a set of four stickers" -> "a sticker"), the variant takes the
  list's place or follows the shared description, and images without a variant are numbered by
  their place only ("第2张", "image 2"), never with the total ("共4张", "of 4" ask for a group).
* :mod:`.wording` -- that rewrite of the shared description for one image.
* :mod:`.rules` -- the tables those rules read, as data (number words, image nouns, stop words,
  series words, triggers, list markers) and the numeric limits they tune by.
* :mod:`.llm` -- :class:`LLMPlanner`: any OpenAI-compatible chat endpoint, falling back to the rules
  on any failure; the request's ``optimize_prompt_options.thinking`` chooses how carefully it asks.
"""

from __future__ import annotations

from .base import MAX_GROUP_IMAGES, THINKING_MODES, GroupPlan, Planner, Thinking
from .llm import LLMPlanner
from .plan import DEFAULT_SERIES_COUNT, RulePlanner, plan_group

__all__ = [
    "DEFAULT_SERIES_COUNT",
    "MAX_GROUP_IMAGES",
    "THINKING_MODES",
    "GroupPlan",
    "LLMPlanner",
    "Planner",
    "RulePlanner",
    "Thinking",
    "plan_group",
]
