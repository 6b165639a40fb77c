"""Decoding references in worker processes that can be stopped: a per-request time budget, cancellation.

A :class:`ReferenceDecoder` owns a ``pebble`` process pool (its own: decoding never takes the threads
that encode images). Workers start with ``forkserver`` (``spawn`` where that is missing), never ``fork``:
the server process has threads and may hold torch. One call decodes one request's references in
parallel under ONE budget; past it, or when the awaiting task is cancelled (the client left), the
pool's futures are cancelled, which kills the workers that run them, and pebble starts fresh ones.
Calls take turns on the pool, and a call's budget starts with its turn: it measures the request's own
decoding, never a wait behind another request's (which would refuse honest images, as a 400, whenever
two jobs with many large references run at once). The wait for a turn is bounded too: only jobs that
hold an engine slot decode, each for at most one budget.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError as FutureCancelled
from typing import TYPE_CHECKING

from pebble import ProcessExpired, ProcessPool
from PIL import Image

from seedream_server.errors import InvalidParameter

from .decode import decode_reference
from .errors import ReferenceRejected, invalid_reference
from .policy import FetchedReference, ImageFormat

if TYPE_CHECKING:
    from seedream_server.config import Settings

__all__ = ["DecodeWork", "ReferenceDecoder"]

DecodeWork = Callable[[bytes, ImageFormat, int | None], Image.Image]
"""``work(data, format, max_pixels) -> RGB image``, run in a worker; must be picklable (module level)."""


def _start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class ReferenceDecoder:
    """Decodes fetched references in stoppable worker processes, one time budget per call."""

    def __init__(self, workers: int, timeout_s: float, *, work: DecodeWork = decode_reference) -> None:
        """``workers`` processes (started on first use); ``timeout_s`` is one request's budget.

        ``work`` is the function a worker runs (default :func:`~.decode.decode_reference`).
        """
        if workers < 1 or timeout_s <= 0:
            raise ValueError("a reference decoder needs at least one worker and a positive time budget")
        self.workers = workers
        self.timeout_s = timeout_s
        self._work = work
        self._pool = ProcessPool(max_workers=workers, context=multiprocessing.get_context(_start_method()))
        self._started = False
        self._turn = asyncio.Lock()  # one call's references on the pool at a time (see the module docstring)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferenceDecoder:
        """The decoder a server runs: ``reference_decode_workers`` and ``reference_decode_timeout_s``."""
        return cls(settings.reference_decode_workers, settings.reference_decode_timeout_s)

    async def decode(self, refs: Sequence[FetchedReference], max_pixels: int | None) -> list[Image.Image]:
        """RGB images of ``refs`` in order, each at most ``max_pixels`` large (aspect kept).

        Raises :class:`InvalidParameter` (``param="image"``, ``image[<index>]: ...``) for the lowest
        index that failed, or, past the budget, that is not done yet; every other decode is stopped then.
        """
        if not refs:
            return []
        async with self._turn:
            return await self._decode(refs, max_pixels)

    async def _decode(self, refs: Sequence[FetchedReference], max_pixels: int | None) -> list[Image.Image]:
        if not self._started:  # starting processes blocks: not on the event loop
            await asyncio.to_thread(lambda: self._pool.active)
            self._started = True
        futures = [
            self._pool.schedule(self._work, args=(ref.data, ref.format, max_pixels), timeout=self.timeout_s)
            for ref in refs
        ]
        try:
            waiters = [asyncio.wrap_future(future) for future in futures]
            for waiter in waiters:  # late failures of abandoned decodes are not worth a log line
                waiter.add_done_callback(_error)
            _done, pending = await asyncio.wait(waiters, timeout=self.timeout_s, return_when=asyncio.FIRST_EXCEPTION)
            return self._results(refs, waiters, pending)
        finally:
            for future in futures:  # a no-op for finished ones; kills the worker of a running one
                future.cancel()  # type: ignore[no-untyped-call]  # pebble leaves it unannotated

    def _results(
        self,
        refs: Sequence[FetchedReference],
        waiters: Sequence[asyncio.Future[Image.Image]],
        pending: set[asyncio.Future[Image.Image]],
    ) -> list[Image.Image]:
        failures = [(ref, _error(waiter)) for ref, waiter in zip(refs, waiters, strict=True) if waiter.done()]
        failed = [(ref, error) for ref, error in failures if error is not None]
        if failed:
            ref, error = min(failed, key=lambda pair: pair[0].index)
            raise self._translate(ref, error)
        if pending:
            first = min((ref for ref, waiter in zip(refs, waiters, strict=True) if waiter in pending), key=_index)
            raise self._too_slow(first)
        return [waiter.result() for waiter in waiters]

    def _too_slow(self, ref: FetchedReference) -> InvalidParameter:
        return invalid_reference(
            ref.index,
            f"took longer than {self.timeout_s:g} s to decode (the time budget for all of a request's "
            f"references; this {ref.width}x{ref.height} {ref.format} image was not done)",
        )

    def _translate(self, ref: FetchedReference, error: BaseException) -> InvalidParameter:
        if isinstance(error, ReferenceRejected):
            return invalid_reference(ref.index, error)
        if isinstance(error, TimeoutError):  # pebble's own per-task limit: the same budget
            return self._too_slow(ref)
        if isinstance(error, ProcessExpired):
            return invalid_reference(
                ref.index, f"the decoder stopped on this {ref.format} image (exit {error.exitcode})"
            )
        if isinstance(error, FutureCancelled | asyncio.CancelledError):
            return invalid_reference(ref.index, "decoding was stopped")
        return invalid_reference(ref.index, f"could not decode the {ref.format} image ({type(error).__name__})")

    async def aclose(self) -> None:
        """Stop every worker (running decodes are killed) and wait for them to exit."""
        self._pool.stop()  # type: ignore[no-untyped-call]
        if self._started:
            await asyncio.to_thread(self._pool.join)


def _index(ref: FetchedReference) -> int:
    return ref.index


def _error(waiter: asyncio.Future[Image.Image]) -> BaseException | None:
    """The waiter's exception (a cancelled one counts as stopped); marks it retrieved."""
    return FutureCancelled() if waiter.cancelled() else waiter.exception()
