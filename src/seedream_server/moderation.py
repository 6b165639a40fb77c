"""The moderation hook: a configurable word list for prompts and a pluggable per-image check.

* Prompts: a request whose prompt contains a listed word (case-insensitive, after Unicode NFKC
  normalisation and with whitespace removed) is refused with 400 ``InputTextSensitiveContentDetected``
  before any work.
* Images: an :class:`ImageCheck` (any ``module:attribute`` named in the settings, resolving to a class or
  a factory returning one) sees each reference (a refusal is 400 ``InputImageSensitiveContentDetected``)
  and each generated image (a refusal makes that one image ``OutputImageSensitiveContentDetected``;
  the rest of the group goes on).
"""

from __future__ import annotations

import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import cast

from PIL import Image

from .errors import SensitiveContentDetected
from .plugins import load_plugin


class ImageCheck(ABC):
    """One plug point: decide whether an image may be accepted or delivered."""

    @abstractmethod
    async def allowed(self, image: Image.Image, *, prompt: str, kind: str) -> bool:
        """``kind`` is ``"input"`` for references and ``"output"`` for generated images."""


def _normalise(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def load_words(words: str = "", words_file: str = "") -> tuple[str, ...]:
    """Comma-separated words plus one word per line from a file (``#`` starts a comment)."""
    items = [w for w in words.split(",")]
    if words_file:
        for line in Path(words_file).read_text(encoding="utf-8").splitlines():
            items.append(line.split("#", 1)[0])
    return tuple(sorted({n for n in (_normalise(w) for w in items) if n}))


def load_image_check(spec: str) -> ImageCheck | None:
    """Import ``package.module:attribute``; the attribute is an ImageCheck class or factory."""
    return cast(ImageCheck | None, load_plugin(spec, ImageCheck, "image check"))


class Moderation:
    """Applies the word list and the image check; raises or reports ``SensitiveContentDetected``."""

    def __init__(self, words: Iterable[str] = (), image_check: ImageCheck | None = None) -> None:
        self.words = tuple(_normalise(w) for w in words if _normalise(w))
        self.image_check = image_check

    def check_prompt(self, prompt: str) -> None:
        text = _normalise(prompt)
        if any(word in text for word in self.words):
            raise SensitiveContentDetected(
                "The request failed because the input text may contain sensitive information.",
                param="prompt",
                code="InputTextSensitiveContentDetected",
            )

    async def check_references(self, images: Iterable[Image.Image], prompt: str) -> None:
        if self.image_check is None:
            return
        for index, image in enumerate(images):
            if not await self.image_check.allowed(image, prompt=prompt, kind="input"):
                raise SensitiveContentDetected(
                    f"image[{index}]: the input image may contain sensitive information.",
                    param="image",
                    code="InputImageSensitiveContentDetected",
                )

    async def check_output(self, image: Image.Image, prompt: str) -> None:
        """Raise ``OutputImageSensitiveContentDetected`` when a generated image may not be delivered."""
        if self.image_check is None or await self.image_check.allowed(image, prompt=prompt, kind="output"):
            return
        raise SensitiveContentDetected(
            "The generated image may contain sensitive information.",
            code="OutputImageSensitiveContentDetected",
        )
