"""``create_app(settings) -> FastAPI``: composition only. Builds the per-app registries (models, storage,
accounts, metrics), the service, the middlewares and routers, and the lifespan that starts and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from .. import __version__
from ..accounts import AccountError, Accounts, AccountStore, resolve_database_url
from ..admission import ModelQueue, PixelBudget
from ..config import Settings
from ..delivery import Deliverer
from ..engines.base import Progress, ProgressHook
from ..engines.registry import EngineFactory, build_engine
from ..metrics import Metrics
from ..models import ModelRegistry, ServedModel
from ..moderation import Moderation, load_image_check, load_words
from ..planner import LLMPlanner, Planner, RulePlanner
from ..profiles import DEFAULT_PROFILE, PROFILES, ProfileTable, apply_overrides
from ..references import ReferenceDecoder, ReferencePolicy
from ..service import ImageService
from ..storage import Storage, UrlSigner, build_storage, load_or_create_secret
from ..websearch import load_web_search
from .errors import RefusalRecorder, install_error_handlers
from .middleware import AccessMiddleware, BodyLimitMiddleware, ClientTimeoutMiddleware, ContextMiddleware
from .openapi import install_openapi
from .routes.files import files_router
from .routes.generation import generation_router
from .routes.models import models_router
from .routes.ops import Readiness, ops_router

log = logging.getLogger("seedream_server.http")

SETTLE_ON_SHUTDOWN_S = 5.0  # how long jobs cut off by the shutdown timeout get to settle their ledger rows


@dataclass
class Lifecycle:
    """Whether the app serves: ready once engines started, draining from SIGTERM on."""

    ready: bool = False
    draining: bool = False

    def readiness(self, models: ModelRegistry) -> Readiness:
        unready = sorted(served.name for served in models if not served.engine.ready)
        if self.draining:
            status = "draining"
        elif not self.ready:
            status = "starting"
        else:
            status = "unready" if unready else "ready"
        return Readiness(status=status, models=models.names(), unready=unready)

    def begin_drain(self) -> None:
        """Refuse new requests with 503 from now on (called on SIGTERM, before in-flight work finishes)."""
        self.draining = True  # no logging: this runs inside a signal handler


def _count_step(metrics: Metrics, model: str) -> ProgressHook:
    counter = metrics.denoise_steps.labels(model)

    def hook(progress: Progress) -> None:
        counter.inc()

    return hook


def _planner(settings: Settings) -> Planner:
    if not settings.planner_url:
        return RulePlanner()
    return LLMPlanner(
        settings.planner_url,
        settings.planner_model,
        api_key=settings.planner_api_key or None,
        timeout=settings.planner_timeout_s,
    )


def _models(settings: Settings, metrics: Metrics, factories: dict[str, EngineFactory] | None) -> ModelRegistry:
    profiles = ProfileTable(apply_overrides(PROFILES, list(settings.profile_overrides)))
    served = []
    for model in settings.models:
        engine = build_engine(model, factories, ray_address=settings.ray_address)
        engine.add_progress_hook(_count_step(metrics, model.name))  # steps from engines feed a metric
        queue = ModelQueue(model.name, settings.max_concurrency, settings.max_queue)
        if model.profile:
            profile = profiles.get(model.profile)
        else:
            profile = profiles.for_model(model.name, model.aliases) or profiles.get(DEFAULT_PROFILE)
        served.append(ServedModel(model.name, engine, queue, model.aliases, profile))
    return ModelRegistry(served)


@dataclass
class Parts:
    """What one app is built from: per app, no import-time globals."""

    settings: Settings
    storage: Storage
    metrics: Metrics
    models: ModelRegistry
    accounts: Accounts
    decoder: ReferenceDecoder
    service: ImageService
    lifecycle: Lifecycle


def build_parts(settings: Settings, engine_factories: dict[str, EngineFactory] | None = None) -> Parts:
    """The registries and shared objects for one settings object, wired into the service."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    signer = UrlSigner(load_or_create_secret(data_dir, settings.signing_secret))
    storage = build_storage(settings, signer)
    metrics = Metrics()
    models = _models(settings, metrics, engine_factories)
    accounts = Accounts(
        AccountStore(resolve_database_url(data_dir, settings.database_url)),
        auth_failure_limit=settings.auth_failure_limit,
    )
    decoder = ReferenceDecoder.from_settings(settings)
    service = ImageService(
        models=models,
        accounts=accounts,
        deliverer=Deliverer(storage, metrics, settings.watermark_text, settings.jpeg_quality),
        planner=_planner(settings),
        metrics=metrics,
        reference_policy=ReferencePolicy.from_settings(settings),
        decoder=decoder,
        pixel_budget=PixelBudget(round(settings.max_decoded_megapixels * 1_000_000)),
        moderation=Moderation(
            load_words(settings.moderation_words, settings.moderation_words_file),
            load_image_check(settings.moderation_image_check),
        ),
        web_search=load_web_search(settings.web_search),
        max_prompt_chars=settings.max_prompt_chars,
    )
    return Parts(settings, storage, metrics, models, accounts, decoder, service, Lifecycle())


@contextlib.asynccontextmanager
async def lifespan(parts: Parts) -> AsyncIterator[None]:
    """Open the key store (migrating it), start engines, then the sweeper; on shutdown stop them all."""
    settings, accounts, models = parts.settings, parts.accounts, parts.models
    await accounts.start()
    if settings.auth:
        await _first_key(accounts)
    else:
        log.warning("authentication is disabled (--no-auth): every request is allowed")
    for served in models:
        await served.engine.start()
    parts.lifecycle.ready = True
    sweeper = asyncio.create_task(_sweep_forever(parts.storage, settings.sweep_interval_s))
    try:
        yield
    finally:
        parts.lifecycle.ready = False
        parts.lifecycle.draining = True
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        # jobs cut off by the server's shutdown timeout unwind in their own tasks: let them settle
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_ON_SHUTDOWN_S):
                await parts.service.wait_idle()
        for served in models:
            await served.engine.aclose()
        await parts.decoder.aclose()
        await parts.storage.aclose()
        await parts.service.planner.aclose()
        if parts.service.web_search is not None:
            await parts.service.web_search.aclose()
        await accounts.aclose()


def create_app(settings: Settings, engine_factories: dict[str, EngineFactory] | None = None) -> FastAPI:
    """Build the app for one settings object; ``engine_factories`` registers extra engine kinds."""
    # 1. the parts, and the lifespan that starts and stops them
    parts = build_parts(settings, engine_factories)
    app = FastAPIOffline(  # /docs and /redoc with assets served from the package, not a CDN
        title="seedream-server",
        version=__version__,
        description="Seedream 4.0 image generation API (Ark `/api/v3/images/generations`, "
        "OpenAI `/v1/images/generations`).",
        lifespan=lambda _: lifespan(parts),
    )
    app.state.parts = parts
    app.state.service = parts.service
    app.state.storage = parts.storage
    app.state.accounts = parts.accounts
    app.state.begin_drain = parts.lifecycle.begin_drain
    # 2. middlewares (the last added runs first) and one error envelope
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    draining = parts.lifecycle
    refusals = RefusalRecorder(parts.accounts, parts.models, settings.auth)
    app.add_middleware(
        AccessMiddleware,
        accounts=parts.accounts,
        auth=settings.auth,
        draining=lambda: draining.draining,
        record_refusal=refusals.record,
    )
    app.add_middleware(
        ClientTimeoutMiddleware, read_timeout=settings.http_read_timeout_s, send_timeout=settings.stream_send_timeout_s
    )
    app.add_middleware(ContextMiddleware, metrics=parts.metrics)
    install_error_handlers(app, refusals, parts.metrics)
    # 3. routers and the OpenAPI document
    app.include_router(generation_router(parts.service))
    app.include_router(models_router(parts.models))
    app.include_router(files_router(parts.storage))
    app.include_router(ops_router(parts.metrics, lambda: draining.readiness(parts.models), settings.metrics_token))
    install_openapi(app, settings.auth)
    return app


async def _first_key(accounts: Accounts) -> None:
    """First start with auth on and no keys: create one named 'default' and print it, once, on stdout."""
    if not await asyncio.to_thread(accounts.store.is_empty):
        return
    try:
        _, secret = await asyncio.to_thread(accounts.store.create_key, "default")
    except AccountError:  # another process sharing the database created it first
        return
    print(f"Created API key 'default' (shown once, store it now): {secret}", flush=True)
    log.warning("no API keys existed: created the key 'default' and printed it once on stdout (it is not logged)")


async def _sweep_forever(storage: Storage, interval: float) -> None:
    while True:
        try:
            deleted = await storage.sweep()
            if deleted:
                log.info("sweeper deleted %d expired images", deleted)
        except Exception:
            log.exception("sweeper failed")
        await asyncio.sleep(interval)
