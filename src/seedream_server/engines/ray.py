"""Any engine on Ray Serve replicas: ``executor = "ray"`` in a model's ``[[models]]`` table.

Each such model is one Serve application named after the model, with one deployment whose replicas each
build the model's own engine once (weights load once per replica; ``ray_actor_options = {num_gpus = 1}``
gives each replica one GPU). Every API process connected to the cluster (``--ray-address``) uses the same
replicas: the first one to start deploys the application, the others find it by name. The API process
keeps queue admission, 429s, delivery and the ledger; only ``generate`` crosses the handle.

A job goes to a replica as one streaming call; the replica yields, in order, progress items (from its
engine's step callback) and one item per image (pixels as raw bytes, pickle-safe), so streaming, groups
and progress work as in process. Closing the iterator here cancels the call, which cancels the replica's
generator and closes its engine's iterator (the diffusers engine stops at its next denoising step). A
replica that dies mid-job fails that job with an :class:`EngineError`; Serve routes the next jobs to
healthy replicas and replaces the dead one.

Each image is logged with the replica that made it (``ray replica=<id>``, level INFO).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..config import ModelConfig
from ..errors import EngineError, SeedreamError
from .base import Engine, EngineCapabilities, ImageJob, ImageResult, Progress, ProgressHook

log = logging.getLogger("seedream_server.engines.ray")

#: the keys of a ``[[models]]`` table that place it on Ray; the engine never sees them
RAY_KEYS = ("executor", "replicas", "autoscaling", "ray_actor_options")
EXECUTORS = ("local", "ray")
RAY_NAMESPACE = "seedream"
#: a job whose replica died before it delivered an image is sent once more (Serve picks a live replica)
RETRIES_BEFORE_FIRST_IMAGE = 1

PackedImage = tuple[str, tuple[int, int], bytes]


@dataclass(frozen=True)
class RayPlacement:
    """Where a model runs on Ray: a fixed replica count or an autoscaling range, and actor resources."""

    replicas: int | None = 1
    autoscaling: tuple[int, int] | None = None  # (min, max)
    ray_actor_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def deployment_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"ray_actor_options": dict(self.ray_actor_options)}
        if self.autoscaling is not None:
            low, high = self.autoscaling
            options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "initial_replicas": low}
        else:
            options["num_replicas"] = self.replicas
        return options


def split_placement(model: ModelConfig) -> tuple[RayPlacement | None, ModelConfig]:
    """The model's Ray placement (None: runs in process) and its config with the Ray keys taken out."""
    options = dict(model.options)
    raw = {key: options.pop(key) for key in RAY_KEYS if key in options}
    inner = dataclasses.replace(model, options=options)
    executor = raw.pop("executor", "local")
    if executor not in EXECUTORS:
        raise ValueError(f"model {model.name!r}: executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    if executor == "local":
        if raw:
            raise ValueError(f'model {model.name!r}: {", ".join(sorted(raw))} need executor = "ray"')
        return None, inner
    return _placement(model.name, raw), inner


def _placement(name: str, raw: dict[str, Any]) -> RayPlacement:
    actor_options = raw.get("ray_actor_options", {})
    if not isinstance(actor_options, dict):
        raise ValueError(f"model {name!r}: ray_actor_options must be a table, e.g. {{num_gpus = 1}}")
    if "replicas" in raw and "autoscaling" in raw:
        raise ValueError(f"model {name!r}: give replicas or autoscaling, not both")
    if "autoscaling" in raw:
        scaling = raw["autoscaling"]
        if not isinstance(scaling, dict) or set(scaling) != {"min", "max"}:
            raise ValueError(f"model {name!r}: autoscaling must be a table {{min = 0, max = 4}}")
        low, high = scaling["min"], scaling["max"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) or not 0 <= low <= high:
            raise ValueError(f"model {name!r}: autoscaling needs integers 0 <= min <= max, max >= 1")
        if high < 1:
            raise ValueError(f"model {name!r}: autoscaling max must be at least 1")
        return RayPlacement(replicas=None, autoscaling=(low, high), ray_actor_options=actor_options)
    replicas = raw.get("replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise ValueError(f"model {name!r}: replicas must be an integer of at least 1, not {replicas!r}")
    return RayPlacement(replicas=replicas, ray_actor_options=actor_options)


# -- what crosses the handle: pickle-safe, no PIL objects ---------------------------------------------------


def pack_image(image: Image.Image) -> PackedImage:
    return image.mode, image.size, image.tobytes()


def unpack_image(packed: PackedImage) -> Image.Image:
    mode, size, data = packed
    return Image.frombytes(mode, size, data)


def pack_job(job: ImageJob) -> tuple[ImageJob, tuple[PackedImage, ...]]:
    plain = dataclasses.replace(job, references=(), fields=dict(job.fields))
    return plain, tuple(pack_image(image) for image in job.references)


def unpack_job(packed: tuple[ImageJob, tuple[PackedImage, ...]]) -> ImageJob:
    job, references = packed
    return dataclasses.replace(job, references=tuple(unpack_image(image) for image in references))


def pack_result(result: ImageResult) -> tuple[ImageResult, PackedImage | None]:
    image = result.image
    return dataclasses.replace(result, image=None), None if image is None else pack_image(image)


def unpack_result(packed: tuple[ImageResult, PackedImage | None]) -> ImageResult:
    result, image = packed
    return result if image is None else dataclasses.replace(result, image=unpack_image(image))


# -- the process's connection to Ray (ray.init is per process, so this is one per process) ------------------


#: read by Ray when it is imported: "0" makes a local Ray use 127.0.0.1 for its own addresses
LOOPBACK_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class _Connection:
    """Connects this process to Ray once (unless something else in it already did); disconnects when the last
    Ray model closes, if it connected."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.owned = False

    def acquire(self, address: str) -> None:
        if not address:  # a Ray of this machine alone: its processes talk over loopback, not the interface
            os.environ.setdefault(LOOPBACK_RAY_ENV, "0")
        import ray

        with self.lock:
            if not ray.is_initialized():
                # empty address: a local Ray started on demand (it stops with this process)
                ray.init(address=address or None, namespace=RAY_NAMESPACE, include_dashboard=False)
                self.owned = True
            self.users += 1

    def release(self) -> None:
        import ray

        with self.lock:
            self.users -= 1
            if self.users == 0 and self.owned:
                self.owned = False
                ray.shutdown()


_CONNECTION = _Connection()


class RayEngine(Engine):
    """The API process's side of a model on Ray Serve: deploys or finds its application, streams jobs."""

    def __init__(self, model: ModelConfig, placement: RayPlacement, address: str = "") -> None:
        self.model = model  # the inner model (Ray keys taken out), built on each replica
        self.placement = placement
        self.address = address
        self.kind = model.engine
        self._handle: Any = None
        self._capabilities = EngineCapabilities(description=f"{model.engine} on Ray Serve (starting)")
        self._hooks: list[ProgressHook] = []
        self._connected = False

    @property
    def capabilities(self) -> EngineCapabilities:
        return self._capabilities

    @property
    def ready(self) -> bool:
        return self._handle is not None

    def add_progress_hook(self, hook: ProgressHook) -> None:
        self._hooks.append(hook)

    async def start(self) -> None:
        await asyncio.to_thread(_CONNECTION.acquire, self.address)
        self._connected = True
        self._handle = await asyncio.to_thread(self._deploy_or_find)
        self._capabilities = await self._handle.capabilities.remote()

    def _deploy_or_find(self) -> Any:
        from ray import serve
        from ray.serve.exceptions import RayServeException

        name = self.model.name
        with contextlib.suppress(RayServeException, KeyError):
            status = serve.status().applications.get(name)
            # DEPLOYING: another API process is deploying it (its replicas may be loading weights): wait for it
            if status is not None and str(status.status).endswith(("RUNNING", "DEPLOYING")):
                log.info("ray: model %s found running on the cluster", name)
                return serve.get_app_handle(name)
        log.info("ray: deploying model %s (%s)", name, self.placement.deployment_options())
        serve.start(proxy_location="Disabled")  # no HTTP proxy: only deployment handles reach the replicas
        return serve.run(_application(self.model, self.placement), name=name, route_prefix=None)

    async def generate(self, job: ImageJob) -> AsyncIterator[ImageResult]:
        from ray.exceptions import RayError
        from ray.serve.exceptions import RayServeException

        if self._handle is None:
            raise EngineError(f"The model {self.model.name} is not deployed on Ray yet.")
        packed = pack_job(job)
        for attempt in range(1 + RETRIES_BEFORE_FIRST_IMAGE):
            delivered = 0
            try:
                async with contextlib.aclosing(self._stream(job, packed)) as results:  # type: ignore[type-var]
                    async for result in results:
                        delivered += 1
                        yield result
                return
            except (RayError, RayServeException) as exc:
                if delivered == 0 and attempt < RETRIES_BEFORE_FIRST_IMAGE:  # nothing delivered: go elsewhere
                    log.warning("ray: model %s request_id=%s: %r; retrying", self.model.name, job.request_id, exc)
                    continue
                log.error("ray: model %s failed mid-job request_id=%s: %r", self.model.name, job.request_id, exc)
                raise EngineError(
                    f"The Ray replica serving {self.model.name} failed during this request ({type(exc).__name__})."
                ) from exc

    async def _stream(self, job: ImageJob, packed: Any) -> AsyncIterator[ImageResult]:
        """One streaming call to a replica: progress to the hooks, results yielded, engine errors raised."""
        stream = self._handle.options(stream=True).generate.remote(packed)
        try:
            async for kind, item, replica in stream:
                if kind == "progress":
                    self._progress(item)
                elif kind == "error":
                    raise item
                else:
                    result = unpack_result(item)
                    log.info(
                        "ray replica=%s model=%s request_id=%s index=%d", replica, self.model.name, job.request_id,
                        result.index,
                    )  # fmt: skip
                    yield result
        finally:
            stream.cancel()  # the client left or the job stopped: stop the replica's generator too

    async def replica_stats(self) -> dict[str, Any]:
        """One replica's identity and its engine's counters (whichever replica Serve routes this call to)."""
        if self._handle is None:
            raise EngineError(f"The model {self.model.name} is not deployed on Ray yet.")
        stats: dict[str, Any] = await self._handle.stats.remote()
        return stats

    def _progress(self, progress: Progress) -> None:
        for hook in self._hooks:
            hook(progress)

    async def aclose(self) -> None:
        """Leave the application running for the other API processes; disconnect this one."""
        self._handle = None
        if self._connected:
            self._connected = False
            await asyncio.to_thread(_CONNECTION.release)


def _application(model: ModelConfig, placement: RayPlacement) -> Any:
    from ray import serve

    deployment = serve.deployment(name="engine", **placement.deployment_options())(EngineReplica)
    return deployment.bind(model)


def build_app(args: dict[str, Any]) -> Any:
    """A Serve application builder, for Serve config files and KubeRay's ``RayService``::

        import_path: seedream_server.engines.ray:build_app
        args: {name: sdxl, engine: diffusers, options: {source: /models/sdxl, replicas: 2, ...}}

    The application must be named after the model (``name: sdxl``, ``route_prefix: null``); API processes
    then find it running instead of deploying it. ``options`` is the model's ``[[models]]`` table without
    ``name`` and ``engine`` (the Ray keys included; ``executor`` may be left out).
    """
    options = {"executor": "ray", **dict(args.get("options", {}))}
    model = ModelConfig(name=str(args["name"]), engine=str(args.get("engine", "preview")), options=options)
    placement, inner = split_placement(model)
    assert placement is not None
    return _application(inner, placement)


class EngineReplica:
    """One Serve replica: the model's own engine, built and started once (weights load once per replica)."""

    async def __init__(self, model: ModelConfig) -> None:  # type: ignore[misc]  # Serve awaits async constructors
        from ray import serve

        from .registry import build_engine

        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.loop = asyncio.get_running_loop()
        self.listeners: dict[str, asyncio.Queue[tuple[str, Any]]] = {}
        self.engine = build_engine(model)
        self.engine.add_progress_hook(self._on_progress)
        await self.engine.start()

    def _on_progress(self, progress: Progress) -> None:  # called from the engine's worker thread
        queue = self.listeners.get(progress.request_id)
        if queue is not None:
            self.loop.call_soon_threadsafe(queue.put_nowait, ("progress", progress))

    def capabilities(self) -> EngineCapabilities:
        return self.engine.capabilities

    def stats(self) -> dict[str, Any]:
        """This replica's id and process, and its engine's counters when it keeps them (diffusers)."""
        counters = getattr(self.engine, "stats", None)
        is_record = dataclasses.is_dataclass(counters) and not isinstance(counters, type)
        engine_stats = dataclasses.asdict(counters) if is_record else {}  # type: ignore[arg-type]
        return {"replica": self.replica_id, "pid": os.getpid(), "engine": engine_stats}

    async def generate(self, packed: tuple[ImageJob, tuple[PackedImage, ...]]) -> AsyncIterator[tuple[str, Any, str]]:
        """Progress and results of one job, in order; cancelled when the caller closes its stream."""
        job = unpack_job(packed)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.listeners[job.request_id] = queue
        producer = asyncio.create_task(self._produce(job, queue))
        try:
            while True:
                kind, item = await queue.get()
                if kind == "end":
                    return
                yield kind, item, self.replica_id
        finally:
            self.listeners.pop(job.request_id, None)
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)

    async def _produce(self, job: ImageJob, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        try:
            async with contextlib.aclosing(self.engine.generate(job)) as results:  # type: ignore[type-var]
                async for result in results:
                    queue.put_nowait(("result", pack_result(result)))
        except SeedreamError as exc:  # crosses the handle as it is (status, code and param kept)
            queue.put_nowait(("error", exc))
        except Exception as exc:
            log.exception("engine failed on replica %s request_id=%s", self.replica_id, job.request_id)
            queue.put_nowait(("error", EngineError(f"Image generation failed on a Ray replica: {exc}")))
        queue.put_nowait(("end", None))

    async def __del__(self) -> None:
        await self.engine.aclose()
