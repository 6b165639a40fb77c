"""Real ImageCheck and Engine implementations used by the group and moderation tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from PIL import Image

from seedream_server.engines.base import EngineCapabilities, ImageJob, ImageResult
from seedream_server.engines.preview import PreviewEngine
from seedream_server.errors import EngineError
from seedream_server.moderation import ImageCheck


class RejectNoon(ImageCheck):
    """Refuses generated images whose own prompt ends with 中午 or 'noon'; references that are pure red."""

    async def allowed(self, image: Image.Image, *, prompt: str, kind: str) -> bool:
        if kind == "input":
            return image.convert("RGB").resize((1, 1)).getpixel((0, 0)) != (255, 0, 0)
        return not prompt.rstrip().endswith(("中午", "noon"))


class RejectEverything(ImageCheck):
    async def allowed(self, image: Image.Image, *, prompt: str, kind: str) -> bool:
        return kind == "input"


class FlakyEngine(PreviewEngine):
    """Delivers ``good`` images, then fails like a crashed backend."""

    kind = "flaky"

    def __init__(self, good: int = 2) -> None:
        super().__init__()
        self.good = good
        self.started: list[int] = []

    async def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        produced = 0
        async for result in super().generate(job):
            self.started.append(result.index)
            if produced == self.good:
                raise EngineError("The backend crashed.")
            produced += 1
            yield result


class BrokenEngine(PreviewEngine):
    """A backend with a bug: reading its capabilities raises something no handler expects."""

    kind = "broken"

    @property
    def capabilities(self) -> EngineCapabilities:
        raise RuntimeError("bug in an engine")


class RecordingEngine(PreviewEngine):
    """The preview engine, keeping every job it was given (to see what reaches an engine)."""

    kind = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[ImageJob] = []

    async def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        self.jobs.append(job)
        async for result in super().generate(job):
            yield result
