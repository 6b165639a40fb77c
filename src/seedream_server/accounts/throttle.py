"""Throttling of failed authentication per client address, in process memory.

A client address that failed to authenticate ``limit`` times within a sliding 60-second window gets 429
for the rest of that window, before its key is even looked at. Failures of one address never affect
another, and a success does not wipe anyone's count. At most ``max_clients`` addresses are tracked; past
that the one that failed least recently is forgotten, so a flood of addresses costs bounded memory.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from ..errors import AuthenticationThrottled

WINDOW_S = 60.0


class AuthThrottle:
    """Failed authentications per client address in a sliding window. Used from the event loop only."""

    def __init__(
        self,
        limit: int,
        *,
        window_s: float = WINDOW_S,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"auth failure limit must be at least 1, not {limit}")
        self.limit = limit
        self.window_s = window_s
        self.max_clients = max_clients
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()  # least recently failed first

    def __len__(self) -> int:
        return len(self._failures)

    def check(self, client: str) -> None:
        """Raise 429 while ``client`` has ``limit`` failures in the window."""
        failures = self._failures.get(client)
        if failures is None or len(failures) < self.limit:
            return
        wait = failures[0] + self.window_s - self.clock()
        if wait <= 0:
            return
        retry = max(1, math.ceil(wait))
        raise AuthenticationThrottled(
            f"Too many failed authentications from this address ({self.limit} in {self.window_s:.0f} s); "
            f"retry after {retry} s.",
            retry_after=retry,
        )

    def failed(self, client: str) -> None:
        """Count one failed authentication of ``client``."""
        failures = self._failures.pop(client, None)
        if failures is None:
            failures = deque(maxlen=self.limit)  # only the latest `limit` failures can decide
        failures.append(self.clock())
        self._failures[client] = failures
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
