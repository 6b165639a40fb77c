"""Admission: the bounded queue and engine slots of each model, and the server-wide budget of decoded
reference pixels. Both answer 429 ``ServerOverloaded`` *before* a request spends work on itself; neither
does I/O. A job takes its places here when it is admitted and gives them back when it settles.
"""

from __future__ import annotations

import asyncio
import math

from .errors import ServerOverloaded

#: weight of the newest job in the moving average of slot holding times (for Retry-After)
_SMOOTHING = 0.2
MAX_RETRY_AFTER_S = 60


class ModelQueue:
    """Jobs of one model: ``max_concurrency`` run (hold a slot), up to ``max_queue`` more wait."""

    def __init__(self, name: str, max_concurrency: int, max_queue: int) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.slots = asyncio.Semaphore(max_concurrency)
        self.admitted = 0  # jobs running or waiting for a slot
        self.mean_seconds = 1.0  # moving average of slot holding times

    def check_capacity(self) -> None:
        """429 now when the queue is full, before a request spends work (references, planning) on itself."""
        if self.admitted >= self.max_concurrency + self.max_queue:
            waiting = self.admitted - self.max_concurrency
            retry = math.ceil(self.mean_seconds * (waiting + 1) / max(1, self.max_concurrency))
            raise ServerOverloaded(
                f"The model {self.name} is at capacity ({self.max_concurrency} running, {waiting} waiting); "
                "retry later.",
                retry_after=min(MAX_RETRY_AFTER_S, max(1, retry)),
            )

    def admit(self) -> None:
        """Take a place among the running and waiting jobs, or 429 when ``max_queue`` already wait."""
        self.check_capacity()
        self.admitted += 1

    def leave(self, slot_seconds: float | None) -> None:
        """Give the place back; ``slot_seconds`` is how long the job held a slot (None: it never ran)."""
        self.admitted = max(0, self.admitted - 1)
        if slot_seconds is not None:
            self.mean_seconds = (1 - _SMOOTHING) * self.mean_seconds + _SMOOTHING * slot_seconds


class PixelBudget:
    """The decoded reference pixels that admitted jobs may hold at once, server-wide.

    A job reserves what its references will take once decoded (known from their headers) when it is
    admitted, so a flood of small requests that would expand into gigabytes gets 429 instead of memory.
    """

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.reserved = 0

    def reserve(self, pixels: int) -> int:
        """Reserve ``pixels`` (returned, to be released) or raise 429 ``ServerOverloaded``."""
        if pixels and self.reserved + pixels > self.max_pixels:
            raise ServerOverloaded(
                f"The server holds too many decoded reference images right now ({self.reserved / 1e6:.0f} of "
                f"{self.max_pixels / 1e6:.0f} megapixels); retry later.",
                retry_after=5,
            )
        self.reserved += pixels
        return pixels

    def release(self, pixels: int) -> None:
        self.reserved = max(0, self.reserved - pixels)
