"""The upstream key pool: keys taken in turn, a key that upstream refused (401/403) or throttled (429)
left out for a while.

Keys are secrets: a :class:`KeyPool` never shows one (its ``repr`` and :meth:`KeyPool.label` give a
position and a short fingerprint), and :func:`scrub` removes them from any text that came from upstream.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable

#: how long a key that upstream refused (401/403) stays out of rotation
REFUSED_COOLDOWN_S = 300.0
#: how long a throttled key (429 without Retry-After) stays out
THROTTLED_COOLDOWN_S = 10.0

Clock = Callable[[], float]


class KeyPool:
    """Rotated upstream keys with per-key cooldowns. An empty pool sends no key at all."""

    def __init__(self, keys: Iterable[str], clock: Clock = time.monotonic) -> None:
        self._keys = tuple(dict.fromkeys(keys))  # in order, without repeats
        self._clock = clock
        self._next = 0
        self._cool_until = [0.0] * len(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyPool({len(self._keys)} keys, {len(self.available())} available)"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every key, for :func:`scrub` only."""
        return self._keys

    def available(self) -> list[int]:
        """Positions of the keys not cooling down now."""
        now = self._clock()
        return [i for i, until in enumerate(self._cool_until) if until <= now]

    def pick(self, exclude: Iterable[str] = (), *, advance: bool = True) -> str | None:
        """The next key in turn that is not cooling down and not in ``exclude`` (the keys this call already
        tried); when every such key is cooling, the one that comes back first. None: the pool is empty, or
        every key is excluded. ``advance=False`` leaves the rotation where it is (for probes)."""
        if not self._keys:
            return None
        excluded = set(exclude)
        now = self._clock()
        order = [(self._next + step) % len(self._keys) for step in range(len(self._keys))]
        candidates = [i for i in order if self._keys[i] not in excluded]
        if not candidates:
            return None
        ready = [i for i in candidates if self._cool_until[i] <= now]
        chosen = ready[0] if ready else min(candidates, key=lambda i: self._cool_until[i])
        if advance:
            self._next = (chosen + 1) % len(self._keys)
        return self._keys[chosen]

    def cool_down(self, key: str | None, seconds: float) -> None:
        """Leave ``key`` out of rotation for ``seconds`` (a longer cooldown already running is kept)."""
        if key is None or key not in self._keys:
            return
        i = self._keys.index(key)
        self._cool_until[i] = max(self._cool_until[i], self._clock() + seconds)

    def label(self, key: str | None) -> str:
        """A loggable name of ``key``: its position in the pool and a short hash, never the key."""
        if key is None:
            return "no key"
        digest = hashlib.sha256(key.encode()).hexdigest()[:8]
        position = self._keys.index(key) + 1 if key in self._keys else 0
        return f"key #{position} (sha256 {digest})"


_CREDENTIALS_IN_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:key|api[_-]?key|token|access[_-]?token|signature|x-amz-signature)=)[^&\s\"']+")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets, without credentials in URLs and without secret query values."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _CREDENTIALS_IN_URL.sub(r"\1***@", text)
    return _SECRET_QUERY.sub(r"\1***", text)
