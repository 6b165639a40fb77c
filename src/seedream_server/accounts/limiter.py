"""The images-per-minute limit: a sliding 60-second window per key, kept in the database.

A request reserves its planned image count before generating and settles to the images it delivered.
Reservations are rows of ``ipm_reservations`` (key, wall-clock epoch seconds, images), so windows survive a
restart and hold across every process that shares the database. A reservation is checked and inserted in
one transaction that holds a per-key lock (SQLite: ``BEGIN IMMEDIATE``, the database's write lock;
PostgreSQL: a transaction-scoped advisory lock on the key), so concurrent requests never over-grant. Rows
that have left the window are deleted as the key reserves again, and all of them at start.

Processes sharing PostgreSQL compare their own wall clocks: keep them in sync (NTP), as for any log.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from ..errors import IpmRateLimitExceeded
from .schema import IPM_RESERVATIONS, Database

log = logging.getLogger("seedream_server.accounts")

WINDOW_S = 60.0
_PG_LOCK_CLASS = 0x5EED  # advisory locks on (this, hash of a key name) serialise one key's reservations

_R = IPM_RESERVATIONS


def _pg_lock_key(key_name: str) -> int:
    return int.from_bytes(hashlib.sha256(key_name.encode("utf-8")).digest()[:4], "big", signed=True)


def _refuse_beyond(window: Sequence[tuple[float, int]], images: int, limit: int, now: float, window_s: float) -> None:
    """Raise 429 with the seconds until ``images`` fit, unless they fit ``limit`` now.

    ``window`` is the key's reservations in the window as (time, images), oldest first.
    """
    if images > limit:
        raise IpmRateLimitExceeded(
            f"This request would generate {images} images, more than the API key's limit of {limit} "
            "images per minute; ask for fewer images.",
            retry_after=math.ceil(window_s),
        )
    used = sum(count for _, count in window)
    if used + images <= limit:
        return
    wait, freed = window_s, 0
    for started, count in window:
        freed += count
        if used - freed + images <= limit:
            wait = started + window_s - now
            break
    retry = max(1, math.ceil(wait))
    raise IpmRateLimitExceeded(
        f"The API key's limit of {limit} images per minute is reached ({used} used in the last "
        f"{window_s:.0f} s, this request needs {images}); retry after {retry} s.",
        retry_after=retry,
    )


class IpmLimiter:
    """Sliding-window images-per-minute limits per key, atomic in the database.

    ``clock`` is wall-clock epoch seconds (a parameter for tests of the window): the rows outlive the
    process, so a monotonic clock would not do. Methods are synchronous; :class:`~.facade.Accounts` runs
    them in its worker threads.
    """

    def __init__(self, database: Database, window_s: float = WINDOW_S, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.window_s = window_s
        self.clock = clock

    def _window(self, conn: Connection, key_name: str, now: float) -> list[tuple[float, int]]:
        query = (
            select(_R.c.ts, _R.c.images)
            .where(_R.c.key_name == key_name, _R.c.ts > now - self.window_s)
            .order_by(_R.c.ts, _R.c.id)
        )
        return [(float(row.ts), int(row.images)) for row in conn.execute(query)]

    def used(self, key_name: str) -> int:
        """Images of ``key_name`` in the window now."""
        with self.database.engine.connect() as conn:
            return sum(count for _, count in self._window(conn, key_name, self.clock()))

    def check(self, key_name: str, images: int, limit: int) -> None:
        """Raise 429 unless ``images`` fit the key's window now; reserves nothing."""
        with self.database.engine.connect() as conn:
            now = self.clock()
            _refuse_beyond(self._window(conn, key_name, now), images, limit, now, self.window_s)

    def reserve(self, key_name: str, images: int, limit: int, request_id: str | None = None) -> int:
        """Reserve ``images`` for ``key_name`` or raise 429 with the seconds until they fit; returns the
        reservation's id for :meth:`settle`."""
        with self.database.writing() as conn:
            if self.database.dialect == "postgresql":
                lock = text("SELECT pg_advisory_xact_lock(:cls, :key)")
                conn.execute(lock, {"cls": _PG_LOCK_CLASS, "key": _pg_lock_key(key_name)})
            now = self.clock()  # read under the lock, so reservations of one key are in time order
            conn.execute(delete(_R).where(_R.c.key_name == key_name, _R.c.ts <= now - self.window_s))
            _refuse_beyond(self._window(conn, key_name, now), images, limit, now, self.window_s)
            row = {"key_name": key_name, "ts": now, "images": images, "request_id": request_id}
            return int(conn.execute(insert(_R).values(**row).returning(_R.c.id)).scalar_one())

    def settle(self, reservation_id: int, used: int) -> None:
        """Keep ``used`` images of a reservation in the window (never more than reserved)."""
        used = max(0, used)
        with self.database.writing() as conn:
            conn.execute(update(_R).where(_R.c.id == reservation_id, _R.c.images > used).values(images=used))

    def sweep(self) -> int:
        """Delete every key's reservations that have left the window; returns how many."""
        with self.database.writing() as conn:
            result = conn.execute(delete(_R).where(_R.c.ts <= self.clock() - self.window_s))
        return int(result.rowcount)

    def total(self) -> int:
        """Reservation rows stored (of every key, in the window or not)."""
        with self.database.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_R)).scalar() or 0)
