"""One upstream as the engines see it: POST a call, get a 2xx response, with keys, replicas and retries
handled here.

:meth:`Upstream.call` sends one logical call: it picks a replica (least in flight) and a key (in turn),
retries connection errors, timeouts, 429 and 5xx with backoff, moves to the next key when one is refused
(401/403; that does not use up a retry), and raises our error when nothing is left to try. Retries end
at the response headers of a streamed call: once its events flow, a failure is the caller's to report.

A background probe (``GET {base_url}/models``; any HTTP answer counts) keeps :attr:`Upstream.ready` true
while some replica answers; :meth:`Upstream.start` never waits for the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ...errors import SeedreamError
from .errors import status_error, transport_error
from .keys import REFUSED_COOLDOWN_S, THROTTLED_COOLDOWN_S, KeyPool, scrub
from .replicas import Replica, ReplicaSet
from .retry import Retryable, RetryPolicy

log = logging.getLogger("seedream_server.engines.upstream")

PROBE_INTERVAL_S = 5.0
MAX_CONNECTIONS = 64


class Upstream:
    """The HTTP side of one upstream model: a client, its key pool, its replicas and its retry policy."""

    def __init__(self, name: str, base_urls: tuple[str, ...], keys: KeyPool, timeout_s: float, max_retries: int):
        self.name = name
        self.keys = keys
        self.replicas = ReplicaSet(base_urls)
        self.policy = RetryPolicy(max_retries)
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None
        self._probe: asyncio.Task[None] | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError(f"upstream {self.name}: start() first")
        return self._client

    @property
    def ready(self) -> bool:
        return self.replicas.reachable

    def secrets(self) -> tuple[str, ...]:
        return self.keys.secrets

    async def start(self) -> None:
        """Open the client and start probing in the background (never waits for the upstream)."""
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        self._client = httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False)
        self._ensure_probe()

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    @contextlib.asynccontextmanager
    async def call(self, path: str, *, stream: bool = False, **request: Any) -> AsyncIterator[httpx.Response]:
        """POST ``path`` (``json=`` or ``data=``/``files=``) with retries; yields a 2xx response (its body read
        unless ``stream``). Leaving the block closes the connection (a client that left stops the upstream)."""
        replica, response = await self._with_retries(path, stream, request)
        try:
            with self.replicas.using(replica):
                yield response
        finally:
            await response.aclose()

    async def _with_retries(self, path: str, stream: bool, request: dict[str, Any]) -> tuple[Replica, httpx.Response]:
        refused: list[str] = []  # keys upstream refused during this call
        tried: list[Replica] = []
        attempt = 0
        while True:  # bounded: each pass uses up a key (at most len(keys)) or an attempt (at most max_retries)
            replica = self.replicas.pick(tried)
            key = self.keys.pick(refused)
            try:
                return replica, await self._attempt(replica, key, path, stream, request)
            except Retryable as failure:
                if failure.refused_key and key is not None:
                    refused.append(key)
                    if len(refused) < len(self.keys):
                        continue
                    raise failure.error from None
                if not failure.other_target:
                    failure.other_target = failure.retry_after is None and self.replicas.healthy_others(replica)
                delay = self.policy.delay(attempt, failure)
                if delay is None:
                    raise failure.error from None
                tried.append(replica)
                attempt += 1
                log.warning(
                    "upstream %s: %s (%s, %s); retry %d/%d in %.2f s",
                    self.name,
                    failure.error.message,
                    self._where(replica),
                    self.keys.label(key),
                    attempt,
                    self.policy.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _attempt(
        self, replica: Replica, key: str | None, path: str, stream: bool, request: dict[str, Any]
    ) -> httpx.Response:
        """One try on one replica with one key: a 2xx response, or raises (:class:`Retryable` or our error)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with self.replicas.using(replica):
            built = self.client.build_request("POST", replica.url(path), headers=headers, **request)
            try:
                response = await self.client.send(built, stream=True)
                if not stream or response.is_error:
                    await response.aread()
            except httpx.HTTPError as exc:
                connect = isinstance(exc, httpx.ConnectError)
                self.replicas.failed(replica, unreachable=connect)
                if connect:
                    self._ensure_probe()
                raise transport_error(exc, self.timeout_s) from None
        self.replicas.answered(replica)
        if not response.is_error:
            return response
        await response.aclose()
        failure = status_error(response, self.secrets())
        self._note(replica, key, response.status_code, failure)
        raise failure

    def _note(self, replica: Replica, key: str | None, status: int, failure: SeedreamError | Retryable) -> None:
        """What a failed answer says about the key and the replica."""
        if status in (401, 403):
            self.keys.cool_down(key, REFUSED_COOLDOWN_S)
            label = self.keys.label(key)
            log.warning(
                "upstream %s refused %s (%d); left out for %.0f s", self.name, label, status, REFUSED_COOLDOWN_S
            )
        elif status == 429 and isinstance(failure, Retryable):
            self.keys.cool_down(key, failure.retry_after or THROTTLED_COOLDOWN_S)
        elif status >= 500 or status == 408:
            self.replicas.failed(replica)

    def _where(self, replica: Replica) -> str:
        return scrub(replica.base_url, self.secrets())

    def _ensure_probe(self) -> None:
        if self._client is not None and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_reachable())

    async def _probe_until_reachable(self) -> None:
        """Probe every replica not known to answer, until all do (background; ends on aclose)."""
        while True:
            pending = [r for r in self.replicas.replicas if not r.reachable]
            if not pending:
                return
            for replica in pending:
                await self._probe_one(replica)
            if all(r.reachable for r in self.replicas.replicas):
                return
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _probe_one(self, replica: Replica) -> None:
        key = self.keys.pick(advance=False)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            await self.client.get(replica.url("models"), headers=headers, timeout=min(self.timeout_s, 5.0))
        except httpx.HTTPError:
            if replica.reachable is not False:
                log.warning("upstream %s: %s cannot be reached", self.name, self._where(replica))
            replica.reachable = False
            return
        replica.reachable = True
