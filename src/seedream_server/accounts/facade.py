"""The async facade the HTTP layer and the service use: :class:`Accounts` and its :class:`Reservation`.

It runs the synchronous store and limiter on a small thread pool of their own, so key lookups never queue
behind image work in the default executor, throttles failed authentication per client address, and
writes the ledger: a job's row synchronously at admission (durable before generation starts), refusals
through a buffer that one background task writes in batches (so recording never waits on the database,
and works from cancelled requests).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from ..errors import AuthenticationError
from .keys import ApiKey, parse_bearer
from .ledger import UsageRecord
from .limiter import IpmLimiter
from .schema import redact_url, utcnow
from .store import AccountStore
from .throttle import AuthThrottle

log = logging.getLogger("seedream_server.accounts")

T = TypeVar("T")

DEFAULT_AUTH_FAILURE_LIMIT = 20


class Reservation:
    """Images reserved against a key's window; :meth:`settle` gives back what was not delivered."""

    __slots__ = ("_accounts", "_id", "images", "key_name")

    def __init__(self, accounts: Accounts, reservation_id: int, key_name: str, images: int) -> None:
        self._accounts = accounts
        self._id = reservation_id
        self.key_name = key_name
        self.images = images

    async def settle(self, used: int) -> None:
        """Keep ``used`` images of the reservation in the window (never more than reserved). Never raises:
        a failure is logged, and the reservation then counts in full until it leaves the window."""
        try:
            await self._accounts.call(self._accounts.limiter.settle, self._id, used)
        except Exception:
            log.exception("images-per-minute: could not settle a reservation of key %r", self.key_name)


class Accounts:
    """Keys, limits and the ledger for one app.

    Ledger rows of jobs: :meth:`open_entry` at admission, :meth:`update_entry` per delivered image,
    :meth:`close_entry` at the end. One-shot rows (refusals): :meth:`record`, buffered; :meth:`drain` waits
    for the buffer to empty.
    """

    MAX_BUFFERED = 10_000

    def __init__(
        self,
        store: AccountStore,
        limiter: IpmLimiter | None = None,
        *,
        auth_failure_limit: int = DEFAULT_AUTH_FAILURE_LIMIT,
        throttle: AuthThrottle | None = None,
    ) -> None:
        self.store = store
        self.limiter = limiter if limiter is not None else IpmLimiter(store)
        self.throttle = throttle if throttle is not None else AuthThrottle(auth_failure_limit)
        self._buffer: list[UsageRecord] = []
        self._writer: asyncio.Task[None] | None = None
        self._opened: dict[str, float] = {}  # request id of an open row -> monotonic time it was opened
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="seedream-accounts")

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run a synchronous store or limiter method on the accounts' thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    async def start(self) -> None:
        """Migrate the schema; mark the rows that crashed processes of this host left running as interrupted."""
        version = await self.call(self.store.migrate)
        log.info("key store and usage ledger: %s (schema version %d)", redact_url(self.store.url), version)
        interrupted = await self.call(self.store.recover_interrupted)
        if interrupted:
            log.warning("usage ledger: %d request(s) left running by a dead process marked interrupted", interrupted)
        await self.call(self.limiter.sweep)

    # keys

    async def authenticate(self, authorization: str | None, client: str | None = None) -> ApiKey:
        """The key of an ``Authorization`` header, or 401; 429 while ``client`` (an address) has failed too often.

        Every 401 counts against ``client`` except a request that sends no key at all.
        """
        if client is not None:
            self.throttle.check(client)
        try:
            key = await self.call(self.store.authenticate, parse_bearer(authorization))
            if key is None:
                raise AuthenticationError("The API key in the request is invalid or has been revoked.")
        except AuthenticationError:
            if client is not None and authorization and authorization.strip():  # no key at all is no guess
                self.throttle.failed(client)
            raise
        return key

    # images per minute

    async def check_quota(self, key: ApiKey) -> None:
        """429 unless at least one image fits the key's window now (a spent key is refused before any work)."""
        await self.call(self.limiter.check, key.name, 1, key.ipm)

    async def reserve(self, key: ApiKey, images: int, request_id: str | None = None) -> Reservation:
        """Reserve ``images`` against the key's window, or 429 with the seconds until they fit. With the
        ``request_id`` of a job, crash recovery settles the reservation to the images its ledger row counts."""
        reservation_id = await self.call(self.limiter.reserve, key.name, images, key.ipm, request_id)
        return Reservation(self, reservation_id, key.name, images)

    # the ledger

    async def open_entry(self, record: UsageRecord) -> None:
        """Write a job's ledger row, status ``running``; durable when this returns. Raises when it cannot."""
        await self.call(self.store.open_entry, record)
        self._opened[record.request_id] = time.monotonic()

    async def update_entry(self, request_id: str, images: int, tokens: int) -> None:
        """Count a running job's delivered images and tokens so far. Never raises (a failure is logged)."""
        opened = self._opened.get(request_id)
        duration_ms = round((time.monotonic() - opened) * 1000) if opened is not None else None
        try:
            await self.call(self.store.update_entry, request_id, images, tokens, duration_ms)
        except Exception:
            log.exception("usage ledger: could not update the row of request %s", request_id)

    async def close_entry(
        self,
        request_id: str,
        *,
        images: int,
        tokens: int,
        status: str,
        duration_ms: int,
        upstream_request_id: str | None = None,
    ) -> None:
        """End a job's row with its final counts and status. Never raises: on failure it is logged and the row
        stays ``running`` until a later start on this host marks it interrupted."""
        self._opened.pop(request_id, None)
        try:
            close = partial(
                self.store.close_entry,
                request_id,
                images=images,
                tokens=tokens,
                status=status,
                duration_ms=duration_ms,
                upstream_request_id=upstream_request_id,
            )
            await self.call(close)
        except Exception:
            log.exception("usage ledger: could not close the row of request %s", request_id)

    def record(self, record: UsageRecord) -> None:
        """Queue one finished ledger row (timestamped now), such as a refusal; a background task writes it."""
        if record.ts is None:
            record = replace(record, ts=utcnow())
        if len(self._buffer) >= self.MAX_BUFFERED:
            log.error("usage ledger: buffer full (database too slow or down); dropping the oldest row")
            del self._buffer[0]
        self._buffer.append(record)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_buffer())

    async def _write_buffer(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            try:
                await self.call(self.store.record_usage, batch)
            except Exception:
                log.exception("usage ledger: %d rows could not be written", len(batch))

    async def drain(self) -> None:
        """Wait until every queued ledger row is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def aclose(self) -> None:
        await self.drain()
        await self.call(self.store.close)
        self._pool.shutdown(wait=False)
