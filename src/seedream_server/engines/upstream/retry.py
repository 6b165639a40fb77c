"""When to try an upstream call again, and how long to wait first.

A failed attempt raises :class:`Retryable` (connection error, timeout, 429, 5xx) carrying the error the
client gets if no attempt is left. :meth:`RetryPolicy.delay` is exponential backoff with full jitter,
or the upstream's ``Retry-After`` when it gave one. The callers never retry once an image of that call
was delivered: they count what they yielded and re-raise instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ...errors import SeedreamError

#: first backoff step, and the most any backoff step waits
BASE_DELAY_S = 0.5
MAX_DELAY_S = 8.0
#: a Retry-After longer than this is not waited for: the error goes to the client with it
MAX_RETRY_AFTER_S = 30.0


class Retryable(Exception):
    """An attempt failed in a way another attempt may not: ``error`` is what the client gets otherwise."""

    def __init__(
        self,
        error: SeedreamError,
        retry_after: float | None = None,
        *,
        other_target: bool = False,
        refused_key: bool = False,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after
        self.other_target = other_target  # another key or replica can be tried at once, without waiting
        self.refused_key = refused_key  # upstream refused the key (401/403): the next key, not a retry


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` further attempts after the first, with backoff between them."""

    max_retries: int = 3
    base_s: float = BASE_DELAY_S
    cap_s: float = MAX_DELAY_S
    rng: random.Random | None = None

    def delay(self, attempt: int, failure: Retryable) -> float | None:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0), or None: give up."""
        if attempt >= self.max_retries:
            return None
        if failure.other_target:
            return 0.0
        if failure.retry_after is not None:
            return failure.retry_after if failure.retry_after <= MAX_RETRY_AFTER_S else None
        ceiling = min(self.cap_s, self.base_s * 2**attempt)
        return (self.rng or random).uniform(0, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
