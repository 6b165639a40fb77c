"""Replicas of one upstream: least-in-flight routing and passive health.

Each call goes to the healthy replica with the fewest calls in flight (ties: the one used least recently).
A replica whose call failed to connect, timed out or answered 5xx is left out for a while; when every
replica is out, the one that comes back first is tried anyway (an upstream that is down for good then
fails fast with its own error rather than with "no replica").

Reachability (for ``/readyz``) is separate from health: a replica is reachable once anything answered
HTTP there, and unreachable after a connection to it failed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: how long a failed replica stays out of rotation
DOWN_S = 15.0

Clock = Callable[[], float]


@dataclass
class Replica:
    """One base URL and what routing knows about it."""

    base_url: str
    in_flight: int = 0
    down_until: float = 0.0
    reachable: bool | None = None  # None: not known yet
    last_used: int = 0

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"


class ReplicaSet:
    """Routing over the replicas of one model."""

    def __init__(self, base_urls: Iterable[str], clock: Clock = time.monotonic, down_s: float = DOWN_S) -> None:
        self.replicas = [Replica(url) for url in base_urls]
        if not self.replicas:
            raise ValueError("at least one base URL is needed")
        self._clock = clock
        self._down_s = down_s
        self._uses = itertools.count(1)

    @property
    def reachable(self) -> bool:
        """Whether any replica answered HTTP (and has not failed to connect since)."""
        return any(r.reachable for r in self.replicas)

    def pick(self, exclude: Iterable[Replica] = ()) -> Replica:
        """The healthy replica with the fewest calls in flight, preferring ones not in ``exclude`` (those this
        call already tried); when none is healthy, the one that comes back first."""
        now = self._clock()
        tried = {id(r) for r in exclude}
        healthy = [r for r in self.replicas if r.down_until <= now]
        if not healthy:
            return min(self.replicas, key=lambda r: r.down_until)
        fresh = [r for r in healthy if id(r) not in tried] or healthy
        return min(fresh, key=lambda r: (r.in_flight, r.last_used))

    def healthy_others(self, replica: Replica) -> bool:
        """Whether another replica than ``replica`` is healthy now (a failed call can move there at once)."""
        now = self._clock()
        return any(r is not replica and r.down_until <= now for r in self.replicas)

    @contextmanager
    def using(self, replica: Replica) -> Iterator[Replica]:
        """Count one call in flight on ``replica`` while the block runs."""
        replica.in_flight += 1
        replica.last_used = next(self._uses)
        try:
            yield replica
        finally:
            replica.in_flight -= 1

    def failed(self, replica: Replica, *, unreachable: bool = False) -> None:
        """Take ``replica`` out of rotation for a while (passive health)."""
        replica.down_until = self._clock() + self._down_s
        if unreachable:
            replica.reachable = False

    def answered(self, replica: Replica) -> None:
        """``replica`` answered HTTP: reachable, and healthy again."""
        replica.reachable = True
        replica.down_until = 0.0
