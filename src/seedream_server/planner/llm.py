"""The LLM planner: any OpenAI-compatible chat endpoint plans the group, and the rules decide
whenever it fails (timeout, HTTP error, unreadable reply).

The request's ``optimize_prompt_options.thinking`` decides how the planner asks:

* ``auto`` (or absent): the standard system prompt (:data:`SYSTEM_PROMPT`);
* ``enabled``: the standard prompt plus a checklist asking the model to plan carefully, step by step,
  before it answers (:data:`CAREFUL_SUFFIX`);
* ``disabled``: a short system prompt (:data:`SHORT_SYSTEM_PROMPT`) for a quick answer.

With ``thinking_field=True`` the planner also sends Ark's chat field ``"thinking": {"type": mode}``
(Doubao/Seed chat models switch their reasoning with it). It is off by default: strict
OpenAI-compatible servers reject unknown fields, and a rejected request only means the rules plan.
The reply format and the timeout are the same in every mode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Final

import httpx

from .base import GroupPlan, Planner, check_max_images, check_thinking
from .plan import RulePlanner
from .wording import one_image

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 10.0
"""Seconds one planning call may take before the fallback decides."""
_TEMPERATURE: Final = 0  # the same prompt should get the same plan

SYSTEM_PROMPT: Final = """\
You plan image generation requests. Given a user's image prompt (Chinese or English) and a maximum
number of images, decide how many separate images the user wants and write one self-contained
prompt per image, in the user's language. Use several images only when the prompt asks for them:
an explicit number of images ("生成3张", "4 images", "四格漫画", "九宫格"), an enumeration of
variants that cannot share one picture ("早晨、中午、晚上", "spring, summer, autumn and winter"), or
a series ("一组", "系列", "分镜", "storyboard"). A number of objects ("two cats", "一只猫") is not a
number of images; "3D", "2K", "16:9", dates and prices are not counts. Each image prompt keeps the
shared description and adds that image's own variant, and describes ONE picture: drop the group's
count and series words ("生成3张", "一组", "a set of four", "四格漫画" -> "单格漫画") and never list
the other images' variants. Never exceed the maximum.
Reply with JSON only: {"prompts": ["...", "..."]}"""
"""The system prompt for ``thinking: auto`` (and when the request says nothing)."""

CAREFUL_SUFFIX: Final = """
Plan carefully (thinking is enabled). Before you answer, work through these steps:
1. Find every count of images, every enumeration of variants and every series word in the prompt,
   and check that each number counts images, not objects, sizes, dates or prices.
2. Decide the number of images (at most the maximum) and which variant each image gets.
3. Write each image's prompt, then re-read it: it must describe exactly one picture, contain no
   number of images or panels and no other image's variant, and keep every shared detail
   (subject, style, text to draw, composition) of the user's prompt.
Reply with the JSON only, without your reasoning."""
"""Added to :data:`SYSTEM_PROMPT` for ``thinking: enabled``."""

SHORT_SYSTEM_PROMPT: Final = """\
Split an image prompt into one prompt per image, at most max_images, in the user's language. Several
images only for an explicit image count, a list of variants or a series; each prompt describes one
picture, without count words. Reply with JSON only: {"prompts": ["..."]}"""
"""The system prompt for ``thinking: disabled``: a quick answer, no reasoning asked for."""


def system_prompt(thinking: str | None) -> str:
    """The system prompt for a ``thinking`` mode (None means ``auto``)."""
    if thinking == "disabled":
        return SHORT_SYSTEM_PROMPT
    if thinking == "enabled":
        return SYSTEM_PROMPT + "\n" + CAREFUL_SUFFIX
    return SYSTEM_PROMPT


_FENCE: Final = re.compile(r"^\s*```(?:json)?\s*(?P<body>.*?)\s*```\s*$", re.DOTALL)


def parse_prompts(content: object) -> list[str]:
    """The prompts of an LLM reply ``{"prompts": [...]}`` (a ```json fence is tolerated).

    Raises:
        ValueError: the content is not text, not JSON, has no ``prompts`` list, or the list is empty
            or holds anything but non-empty strings.
    """
    if not isinstance(content, str):
        raise ValueError("message content is not text")
    fenced = _FENCE.match(content)
    data = json.loads(fenced["body"] if fenced else content)
    raw = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise ValueError('reply has no "prompts" list')
    prompts = [p.strip() for p in raw if isinstance(p, str) and p.strip()]
    if not prompts or len(prompts) != len(raw):
        raise ValueError('"prompts" must be a non-empty list of non-empty strings')
    return prompts


class LLMPlanner(Planner):
    """Asks an OpenAI-compatible chat endpoint for the plan; falls back to the rules on any failure.

    ``POST {base_url}/chat/completions`` with ``model`` and, when given, ``Authorization: Bearer
    {api_key}``; the reply's message content must be JSON ``{"prompts": [...]}``. A timeout, an HTTP
    error, unreadable JSON or an empty list logs a warning and returns the ``fallback`` plan
    (the rules by default); more prompts than ``max_images`` are cut, and each prompt goes through
    :func:`~.wording.one_image` (a count word the model kept is dropped). ``thinking`` chooses the
    system prompt (see the module docstring); ``thinking_field`` also sends Ark's
    ``"thinking": {"type": mode}`` request field.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        client: httpx.AsyncClient | None = None,
        fallback: Planner | None = None,
        json_mode: bool = True,
        thinking_field: bool = False,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.json_mode = json_mode
        self.thinking_field = thinking_field
        self.fallback: Planner = fallback if fallback is not None else RulePlanner()
        self._client = client
        self._owns_client = client is None

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def plan(self, prompt: str, max_images: int, *, thinking: str | None = None) -> GroupPlan:
        check_max_images(max_images)
        check_thinking(thinking)
        try:
            async with asyncio.timeout(self.timeout):
                prompts = await self._ask(prompt, max_images, thinking)
        except Exception as exc:
            logger.warning(
                "LLM planner at %s failed (%s: %s); using the fallback planner",
                self.url,
                type(exc).__name__,
                exc or "timed out",
            )
            return await self.fallback.plan(prompt, max_images, thinking=thinking)
        if len(prompts) > max_images:
            logger.warning("LLM planner returned %d prompts, cut to %d", len(prompts), max_images)
            prompts = prompts[:max_images]
        if len(prompts) == 1:
            return GroupPlan((prompt,), "llm single")
        # the rules' wording is a safety net: an image's prompt never keeps the group's count words
        prompts = [one_image(p) or p for p in prompts]
        return GroupPlan(tuple(prompts), f"llm {len(prompts)}")

    async def _ask(self, prompt: str, max_images: int, thinking: str | None) -> list[str]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system_prompt(thinking)},
                {
                    "role": "user",
                    "content": json.dumps({"prompt": prompt, "max_images": max_images}, ensure_ascii=False),
                },
            ],
            "temperature": _TEMPERATURE,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        if self.thinking_field:
            body["thinking"] = {"type": thinking or "auto"}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = await self._get_client().post(self.url, json=body, headers=headers, timeout=self.timeout)
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        return parse_prompts(content)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.fallback.aclose()
