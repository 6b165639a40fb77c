"""The planner's plug point: :class:`GroupPlan` (what a plan is) and the :class:`Planner` ABC the
service calls, with the one range check every planner applies to ``max_images``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Final, Literal, get_args

MAX_GROUP_IMAGES: Final = 15
"""The most images one request may produce (references included), per the Seedream 4.0 API."""


Thinking = Literal["auto", "enabled", "disabled"]
"""``optimize_prompt_options.thinking``: how much a planner that can reason should (None means auto)."""
THINKING_MODES: Final[tuple[str, ...]] = get_args(Thinking)


def check_thinking(thinking: str | None) -> None:
    """Raise ``ValueError`` unless ``thinking`` is None or one of :data:`THINKING_MODES`."""
    if thinking is not None and thinking not in THINKING_MODES:
        raise ValueError(f"thinking must be one of {', '.join(THINKING_MODES)}, got {thinking!r}")


def check_max_images(max_images: int) -> None:
    """Raise ``ValueError`` unless ``max_images`` is within 1..:data:`MAX_GROUP_IMAGES`."""
    if not 1 <= max_images <= MAX_GROUP_IMAGES:
        raise ValueError(f"max_images must be within 1..{MAX_GROUP_IMAGES}, got {max_images}")


@dataclass(frozen=True)
class GroupPlan:
    """The images a request will produce: one prompt per image, in order, and why (for logs)."""

    prompts: tuple[str, ...]
    reason: str = "single"

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("a GroupPlan needs at least one prompt")

    @property
    def count(self) -> int:
        """The number of images planned."""
        return len(self.prompts)


class Planner(ABC):
    """Decides the images of an ``auto`` group request. ``max_images`` is already combined (1..15)."""

    @abstractmethod
    async def plan(self, prompt: str, max_images: int, *, thinking: str | None = None) -> GroupPlan:
        """Plan the images for ``prompt``, never more than ``max_images``.

        ``thinking`` is the request's ``optimize_prompt_options.thinking`` (``auto``, ``enabled``,
        ``disabled`` or None for auto): how carefully a planner that reasons should plan. Planners
        that do not reason (the rules) ignore it.
        """

    async def aclose(self) -> None:  # noqa: B027 -- optional hook, most planners hold nothing
        """Release what the planner holds (HTTP clients); the default holds nothing."""
