"""One worker thread per device: it runs every pipeline call for that device, batching what it can.

The event loop never runs a pipeline. Engines put :class:`WorkItem` s (one image each) on the device's
:class:`DeviceWorker`; the thread takes the oldest one and, when it can be batched (text-to-image, a
pipeline that takes prompt lists), gathers compatible items - same model, size, steps and guidance -
that are already queued or arrive within the model's batch window, up to its batch size, and runs
them as one call with a prompt list and one generator per image. Results go back to each item's own
future on its own event loop, so one worker serves several apps or loops (tests, benchmarks).

Cancellation is cooperative: an item whose consumer went away is marked cancelled; the worker skips it
if it has not started, and the step callback of a running call raises :class:`Interrupted` between
two denoising steps once every item of the call is cancelled (or the model or worker is closing).

Workers are shared by device across engines (two models on one GPU take turns rather than fight for
memory), through :func:`acquire_worker` / :func:`release_worker` with a reference count: a device is
a process-wide resource, so this one registry is process-wide too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future as ThreadFuture
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from PIL import Image

log = logging.getLogger("seedream_server.engines.diffusers")

T = TypeVar("T")

#: what one item draws: an image, or (a layered pipeline) its RGBA layers, bottom first
Drawn = Image.Image | tuple[Image.Image, ...]


class Interrupted(Exception):
    """Raised from the step callback to stop a pipeline call between denoising steps."""


@dataclass
class EngineStats:
    """Counters of one model's worker activity (plain ints: read them, export them as metrics)."""

    pipeline_calls: int = 0
    images: int = 0
    steps: int = 0
    interrupted_calls: int = 0
    cancelled_images: int = 0
    largest_batch: int = 0
    #: reference images passed to pipeline calls (a group's fed-forward outputs included)
    references: int = 0


@dataclass(eq=False)
class WorkItem:
    """One image to draw, and where its result goes."""

    runner: Runner
    request_id: str
    index: int
    prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance: float
    references: tuple[Image.Image, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Drawn]
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    layers: int = 0  # a layered pipeline: how many layers to draw

    @property
    def batch_key(self) -> Hashable | None:
        """Items with equal keys can share one pipeline call; ``None``: this one runs alone."""
        if self.references or not self.runner.batchable:
            return None
        return (id(self.runner), self.width, self.height, self.steps, self.guidance)

    def cancel(self) -> None:
        """Called on the item's event loop: forget the result, stop the work if it is the last one waiting."""
        self.cancelled = True
        self.future.cancel()

    def abort(self, error: BaseException) -> None:
        """Fail the item with ``error`` (shutdown) and make sure it does not run, or stops if it runs."""
        self.cancelled = True
        self.resolve(None, error)

    def resolve(self, image: Drawn | None, error: BaseException | None = None) -> None:
        """Called on the worker thread: hand the outcome to the item's event loop."""

        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(image)  # type: ignore[arg-type]

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this result any more
            self.loop.call_soon_threadsafe(settle)


class Runner(Protocol):
    """What the worker needs from a loaded model (see ``pipelines.PipelineRunner``)."""

    closing: bool
    stats: EngineStats

    @property
    def batchable(self) -> bool: ...

    @property
    def max_batch_size(self) -> int: ...

    @property
    def batch_window_s(self) -> float: ...

    def run(self, batch: list[WorkItem], should_stop: Callable[[], bool]) -> list[Drawn]: ...


@dataclass
class _Call:
    """A plain function to run on the worker thread (loading and unloading models)."""

    fn: Callable[[], Any]
    done: ThreadFuture[Any] = field(default_factory=ThreadFuture)


class DeviceWorker:
    """The thread that owns one device."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._queue: deque[WorkItem | _Call] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._main, name=f"seedream-diffusers-{device}", daemon=True)
        self._thread.start()

    # -- called from event loops -------------------------------------------------------------------

    def submit(self, item: WorkItem) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError(f"the {self.device} worker is closed")
            self._queue.append(item)
            self._cond.notify_all()

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread (after what is queued) and return its result."""
        job = _Call(fn)
        with self._cond:
            if self._closing:
                raise RuntimeError(f"the {self.device} worker is closed")
            self._queue.append(job)
            self._cond.notify_all()
        result: T = await asyncio.wrap_future(job.done)
        return result

    def close(self) -> None:
        """Stop taking work, fail what is queued, and let the thread end after its current call."""
        with self._cond:
            self._closing = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in pending:
            if isinstance(job, _Call):
                job.done.set_exception(RuntimeError(f"the {self.device} worker closed"))
            else:
                job.resolve(None, RuntimeError(f"the {self.device} worker closed"))

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the thread --------------------------------------------------------------------------------

    def _main(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            if isinstance(work, _Call):
                try:
                    work.done.set_result(work.fn())
                except BaseException as exc:  # handed to the awaiting coroutine
                    work.done.set_exception(exc)
                continue
            self._run(work)

    def _next(self) -> _Call | list[WorkItem] | None:
        """The next thing to do: a call, or a batch of compatible items (waiting out the batch window)."""
        with self._cond:
            while True:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing and not self._queue:
                    return None
                first = self._queue.popleft()
                if isinstance(first, _Call):
                    return first
                if not first.cancelled:
                    break
                first.runner.stats.cancelled_images += 1
            key = first.batch_key
            batch = [first]
            runner = first.runner
            if key is None or runner.max_batch_size <= 1:
                return batch
            deadline = first.enqueued + runner.batch_window_s
            while len(batch) < runner.max_batch_size:
                for queued in list(self._queue):
                    if isinstance(queued, WorkItem) and not queued.cancelled and queued.batch_key == key:
                        self._queue.remove(queued)
                        batch.append(queued)
                        if len(batch) >= runner.max_batch_size:
                            break
                remaining = deadline - time.monotonic()
                if len(batch) >= runner.max_batch_size or remaining <= 0 or self._closing:
                    break
                self._cond.wait(remaining)
            return batch

    def _run(self, batch: list[WorkItem]) -> None:
        runner = batch[0].runner
        live = [item for item in batch if not item.cancelled]
        runner.stats.cancelled_images += len(batch) - len(live)
        if not live:
            return

        def should_stop() -> bool:
            return self._closing or runner.closing or all(item.cancelled for item in live)

        try:
            images = runner.run(live, should_stop)
        except Interrupted:
            runner.stats.interrupted_calls += 1
            runner.stats.cancelled_images += len(live)
            for item in live:
                item.resolve(None, Interrupted("generation was cancelled"))
            return
        except BaseException as exc:  # every image of the call failed the same way
            for item in live:
                item.resolve(None, exc)
            return
        for item, image in zip(live, images, strict=True):
            item.resolve(image)


_WORKERS: dict[str, tuple[DeviceWorker, int]] = {}
_WORKERS_LOCK = threading.Lock()


def acquire_worker(device: str) -> DeviceWorker:
    """The worker of ``device``, started on first use; pair with :func:`release_worker`."""
    with _WORKERS_LOCK:
        worker, users = _WORKERS.get(device, (None, 0))
        if worker is None:
            worker = DeviceWorker(device)
        _WORKERS[device] = (worker, users + 1)
        return worker


def release_worker(worker: DeviceWorker) -> bool:
    """Drop one user of ``worker``; the last one closes it. Returns whether it was closed."""
    with _WORKERS_LOCK:
        current, users = _WORKERS.get(worker.device, (None, 0))
        if current is not worker:
            return False
        if users > 1:
            _WORKERS[worker.device] = (worker, users - 1)
            return False
        del _WORKERS[worker.device]
    worker.close()
    return True
