"""The HTTP layer: ``create_app(settings) -> FastAPI`` with thin routes, the Ark error envelope,
request ids, JSON and server-sent-event rendering of service events, signed file links, health,
readiness and metrics. All registries (models, storage, metrics) are built here, per app.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.resources
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .accounts import NO_KEY, AccountError, Accounts, AccountStore, ApiKey, UsageRecord, resolve_database_url
from .config import ModelConfig, Settings
from .engines.base import Engine, Progress, ProgressHook
from .engines.preview import PreviewEngine
from .errors import (
    AuthenticationError,
    ClientDisconnected,
    EngineError,
    InvalidParameter,
    NotFoundError,
    SeedreamError,
    ServiceUnavailable,
)
from .metrics import Metrics
from .moderation import Moderation, load_image_check, load_words
from .planner import LLMPlanner, Planner, RulePlanner
from .protocol import (
    ErrorResponse,
    ImageGenerationRequest,
    ImagesResponse,
    edit_form_to_request,
    to_generation_request,
    translate_validation_error,
)
from .references import ReferencePolicy, sniff_format
from .service import (
    Event,
    ImageDelivered,
    ImageFailed,
    ImageService,
    JobAborted,
    JobCompleted,
    PreparedJob,
    ServedModel,
)
from .storage import LocalStorage, UrlSigner, load_or_create_secret
from .storage.base import CONTENT_TYPES, NAME_PATTERN

log = logging.getLogger("seedream_server.app")

_T = TypeVar("_T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Invalid or missing parameter (param names the field).",
        401: "Missing or invalid API key.",
        403: "Key not allowed this model.",
        404: "Unknown model.",
        429: "Rate limit or queue full (Retry-After set).",
        500: "Internal error.",
    }.items()
}


class HttpMiddleware:
    """Base of the pure-ASGI middlewares here: HTTP requests go to :meth:`handle`, other scopes (lifespan)
    straight to the wrapped app."""

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class RequestIdMiddleware(HttpMiddleware):
    """Gives every request an id (``scope['state']['request_id']``) and an ``X-Request-Id`` header."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                self.metrics.responses.labels(str(message["status"])).inc()
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware(HttpMiddleware):
    """Refuses request bodies larger than ``limit`` bytes: by Content-Length before reading, else while
    reading (chunked uploads), so no body is ever held in memory past the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _error(self) -> InvalidParameter:
        return InvalidParameter(f"The request body is larger than the {self.limit}-byte limit.")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            request_id = str(scope.get("state", {}).get("request_id", ""))
            await _error_response(self._error(), request_id)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise self._error()
            return message

        await self.app(scope, limited, send)


API_PREFIXES = ("/v1/", "/api/v3/")  # routes that need an API key (unless --no-auth)
GENERATION_SUFFIXES = ("/images/generations", "/images/edits")  # routes written to the usage ledger
OPEN_WHILE_DRAINING = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessMiddleware(HttpMiddleware):
    """Refuses new requests while the server drains (503) and requires an API key on the API routes (401).

    The key found goes to ``scope['state']['api_key']`` for the routes (model access, limits, ledger).
    ``/files/...`` links carry their own signature; health, readiness and metrics stay open.
    """

    def __init__(self, app: ASGIApp, accounts: Accounts, auth: bool, draining: Callable[[], bool]) -> None:
        self.app = app
        self.accounts = accounts
        self.auth = auth
        self.draining = draining

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        state["started"] = time.perf_counter()
        path = scope["path"]
        error: SeedreamError | None = None
        if self.draining() and path not in OPEN_WHILE_DRAINING:
            error = ServiceUnavailable("The server is shutting down and takes no new requests.", retry_after=5)
        elif self.auth and path.startswith(API_PREFIXES):
            try:
                state["api_key"] = await self.accounts.authenticate(Headers(scope=scope).get("authorization"))
            except AuthenticationError as exc:
                error = exc
            except Exception:
                log.exception("key store unavailable request_id=%s", state.get("request_id", ""))
                error = ServiceUnavailable("The API key store is unavailable; retry shortly.", retry_after=5)
        if error is not None:
            await _error_response(error, str(state.get("request_id", "")))(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SettlingEventSourceResponse(EventSourceResponse):
    """An SSE response that calls ``on_close`` once it is over, however it ended (even never started)."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


EngineFactory = Callable[[ModelConfig], Engine]


def build_engine(model: ModelConfig, extra: dict[str, EngineFactory] | None = None) -> Engine:
    """The engine registry: engine kind -> implementation (``extra`` adds kinds, e.g. in tests)."""
    if extra and model.engine in extra:
        return extra[model.engine](model)
    if model.engine == "preview":
        return PreviewEngine()
    if model.engine == "diffusers":
        # imported here: torch and diffusers are an optional extra, needed only by a model that asks for them
        from .engines.diffusers import DiffusersEngine

        return DiffusersEngine.from_options(model.name, model.options)
    known = ", ".join(sorted({"preview", "diffusers", *(extra or {})}))
    raise ValueError(f"model {model.name!r}: unknown engine {model.engine!r} (available: {known})")


def _count_step(metrics: Metrics, model: str) -> ProgressHook:
    counter = metrics.denoise_steps.labels(model)

    def hook(progress: Progress) -> None:
        counter.inc()

    return hook


def _error_response(exc: SeedreamError, request_id: str) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return JSONResponse(exc.envelope(request_id), status_code=exc.status, headers=headers)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or uuid.uuid4().hex)


def _item(event: ImageDelivered) -> dict[str, Any]:
    item: dict[str, Any] = {"url": event.url} if event.url is not None else {"b64_json": event.b64_json}
    item["size"] = event.size
    return item


def _failure(error: SeedreamError) -> dict[str, str]:
    return {"code": error.code, "message": error.message}


async def _collect(service: ImageService, prepared: PreparedJob) -> dict[str, Any]:
    """Non-streaming: run the whole job, then answer with data in order and usage."""
    data: list[dict[str, Any]] = []
    failures: list[SeedreamError] = []
    usage: dict[str, int] = {}
    aborted: SeedreamError | None = None
    async with contextlib.aclosing(service.run(prepared)) as events:
        async for event in events:
            if isinstance(event, ImageDelivered):
                data.append(_item(event))
            elif isinstance(event, ImageFailed):
                failures.append(event.error)
                data.append({"error": _failure(event.error)})
            elif isinstance(event, JobAborted):
                aborted = event.error
                data.append({"error": _failure(event.error)})
                usage = event.usage.as_dict()
            elif isinstance(event, JobCompleted):
                usage = event.usage.as_dict()
    if aborted is not None and usage.get("generated_images", 0) == 0:
        raise aborted
    if usage.get("generated_images", 0) == 0:
        raise failures[0] if failures else EngineError("No image was generated.")
    return {"model": prepared.request.model, "created": prepared.created, "data": data, "usage": usage}


async def _unless_disconnected(request: Request, work: Awaitable[_T]) -> _T:
    """Await ``work``, cancelling it when the client disconnects (its job then settles as cancelled)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(watcher, task, return_exceptions=True)  # let the job settle as cancelled
    if task.cancelled():
        raise ClientDisconnected("The client disconnected before the response was ready.")
    return task.result()


def _sse(event_type: str, payload: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(payload, ensure_ascii=False, separators=(",", ":")), event=event_type, sep="\n"
    )


async def _stream(service: ImageService, prepared: PreparedJob) -> AsyncIterator[ServerSentEvent]:
    """Streaming: one event per image as soon as it is stored, then completed and [DONE]."""
    base = {"model": prepared.request.model, "created": prepared.created}
    events: AsyncIterator[Event] = service.run(prepared)
    try:
        async for event in events:
            if isinstance(event, ImageDelivered):
                kind = "image_generation.partial_succeeded"
                yield _sse(kind, {"type": kind, **base, "image_index": event.index, **_item(event)})
            elif isinstance(event, ImageFailed):
                kind = "image_generation.partial_failed"
                payload = {"type": kind, **base, "image_index": event.index, "error": _failure(event.error)}
                yield _sse(kind, payload)
            elif isinstance(event, JobAborted):
                yield _sse("error", {"type": "error", **event.error.envelope(prepared.request_id)})
                return
            elif isinstance(event, JobCompleted):
                kind = "image_generation.completed"
                yield _sse(kind, {"type": kind, **base, "usage": event.usage.as_dict()})
        yield ServerSentEvent(data="[DONE]", sep="\n")
    except SeedreamError as exc:
        yield _sse("error", {"type": "error", **exc.envelope(prepared.request_id)})
    except Exception:
        log.exception("stream failed request_id=%s", prepared.request_id)
        yield _sse("error", {"type": "error", **EngineError("Image generation failed.").envelope(prepared.request_id)})
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def create_app(settings: Settings, engine_factories: dict[str, EngineFactory] | None = None) -> FastAPI:
    """Build the app: storage, engines, service and routes for one settings object.

    ``engine_factories`` registers extra engine kinds (name -> factory taking the ModelConfig).
    """
    # 1. registries and shared objects, per app (no import-time globals)
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    signer = UrlSigner(load_or_create_secret(data_dir, settings.signing_secret))
    storage = LocalStorage(data_dir / "images", signer, settings.base_url, settings.retention_hours * 3600)
    metrics = Metrics()
    models = {
        m.name: ServedModel(
            m.name, build_engine(m, engine_factories), m.aliases, settings.max_concurrency, settings.max_queue
        )
        for m in settings.models
    }
    for served in models.values():  # progress from engines' step callbacks feeds a metric
        served.engine.add_progress_hook(_count_step(metrics, served.name))
    policy = ReferencePolicy.from_settings(settings)
    planner: Planner = RulePlanner()
    if settings.planner_url:
        planner = LLMPlanner(
            settings.planner_url,
            settings.planner_model,
            api_key=settings.planner_api_key or None,
            timeout=settings.planner_timeout_s,
        )
    moderation = Moderation(
        load_words(settings.moderation_words, settings.moderation_words_file),
        load_image_check(settings.moderation_image_check),
    )
    accounts = Accounts(AccountStore(resolve_database_url(data_dir, settings.database_url)))
    service = ImageService(settings, models, storage, planner, metrics, policy, moderation, accounts=accounts)
    state: dict[str, Any] = {"ready": False, "draining": False}

    def begin_drain() -> None:
        """Refuse new requests with 503 from now on (called on SIGTERM, before in-flight work finishes)."""
        state["draining"] = True  # no logging: this runs inside a signal handler

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # 2. open the key store (migrating it), start engines, then the sweeper; stop all on shutdown
        await accounts.start()
        if settings.auth:
            await _first_key(accounts)
        for served in models.values():
            await served.engine.start()
        state["ready"] = True
        if not settings.auth:
            log.warning("authentication is disabled (--no-auth): every request is allowed")
        sweeper = asyncio.create_task(_sweep_forever(storage, settings.sweep_interval_s))
        try:
            yield
        finally:
            state["ready"] = False
            state["draining"] = True
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            # jobs cut off by the server's shutdown timeout unwind in their own tasks: let them settle
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await service.wait_idle()
            for served in models.values():
                await served.engine.aclose()
            await storage.aclose()
            await planner.aclose()
            await accounts.aclose()

    app = FastAPI(
        title="seedream-server",
        version=__version__,
        description="Seedream 4.0 image generation API (Ark `/api/v3/images/generations`, "
        "OpenAI `/v1/images/generations`).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.storage = storage
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.accounts = accounts
    app.state.begin_drain = begin_drain
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(AccessMiddleware, accounts=accounts, auth=settings.auth, draining=lambda: state["draining"])
    app.add_middleware(RequestIdMiddleware, metrics=metrics)

    def record_refusal(request: Request, error: SeedreamError, model: Any = None) -> None:
        """Ledger row for a generation request refused after authentication, before its job ran."""
        if not request.url.path.endswith(GENERATION_SUFFIXES) or getattr(request.state, "job_started", False):
            return
        key: ApiKey | None = getattr(request.state, "api_key", None)
        if settings.auth and key is None:
            return
        raw = model or getattr(request.state, "model", None)
        try:  # only served names reach the ledger, never what a client made up
            name = service.resolve_model(str(raw)).name if raw else "-"
        except NotFoundError:
            name = "-"
        started = getattr(request.state, "started", None)
        elapsed_ms = round((time.perf_counter() - started) * 1000) if started is not None else 0
        key_name = key.name if key is not None else NO_KEY
        accounts.record(UsageRecord(key_name, name, 0, 0, error.code, elapsed_ms, _request_id(request)))

    # 3. one error envelope for everything
    @app.exception_handler(SeedreamError)
    async def seedream_error(request: Request, exc: SeedreamError) -> JSONResponse:
        record_refusal(request, exc)
        return _error_response(exc, _request_id(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = translate_validation_error(exc)
        record_refusal(request, error, exc.body.get("model") if isinstance(exc.body, dict) else None)
        return _error_response(error, _request_id(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, SeedreamError):  # raised while FastAPI read the body (size limit)
            error: SeedreamError = exc.__cause__
        elif exc.status_code == 404:
            error = NotFoundError(f"The endpoint {request.url.path} does not exist.")
        else:
            error = InvalidParameter(str(exc.detail), code="InvalidRequest")
            error.status = exc.status_code
        return _error_response(error, _request_id(request))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error request_id=%s", _request_id(request))
        error = SeedreamError("The service encountered an unexpected internal error.")
        record_refusal(request, error)
        # this handler runs outside RequestIdMiddleware (in Starlette's ServerErrorMiddleware): add its part here
        response = _error_response(error, _request_id(request))
        response.headers["X-Request-Id"] = _request_id(request)
        metrics.responses.labels("500").inc()
        return response

    # 4. routes
    async def generate(request: Request, body: ImageGenerationRequest) -> Response:
        if body.model_extra:
            log.debug("ignoring unknown fields %s", sorted(body.model_extra))
        request_id = _request_id(request)
        request.state.model = body.model
        key: ApiKey | None = getattr(request.state, "api_key", None)
        prepared = await service.prepare(to_generation_request(body), request_id, key=key)
        request.state.job_started = True  # from here the job settles its queue place, limit and ledger row
        if prepared.request.stream:
            return SettlingEventSourceResponse(
                _stream(service, prepared), sep="\n", ping=15, on_close=lambda: service.abandon(prepared)
            )
        try:
            return JSONResponse(await _unless_disconnected(request, _collect(service, prepared)))
        finally:
            service.abandon(prepared)  # a no-op when the job ran

    for path in ("/api/v3/images/generations", "/v1/images/generations"):
        app.add_api_route(
            path,
            generate,
            methods=["POST"],
            response_model=ImagesResponse,
            responses={
                **ERROR_RESPONSES,
                200: {
                    "description": "JSON images response, or with stream=true a text/event-stream of "
                    "image_generation.partial_succeeded / partial_failed / completed events and data: [DONE].",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
            },
            summary="Generate images (text-to-image, references, groups, streaming)",
            name=f"generate{path.replace('/', '_')}",
        )

    async def edit(request: Request) -> Response:
        """OpenAI ``/v1/images/edits``: multipart files become data-URI references, then as generate."""
        fields: list[tuple[str, str]] = []
        images: list[str] = []
        async with request.form(max_files=policy.max_count + 1, max_fields=64) as form:
            for key, value in form.multi_items():
                if isinstance(value, str):
                    fields.append((key, value))
                    continue
                if key == "mask":
                    raise InvalidParameter("The parameter `mask` is not supported by Seedream models.", param="mask")
                if key not in {"image", "image[]"}:
                    raise InvalidParameter(f"Unexpected file field {key!r}; send images as image[].", param=key)
                data = await value.read(policy.max_bytes + 1)
                if len(data) > policy.max_bytes:
                    raise InvalidParameter(f"image[{len(images)}]: larger than {policy.max_bytes} bytes", param="image")
                encoded = base64.b64encode(data).decode("ascii")
                images.append(f"data:image/{sniff_format(data)};base64,{encoded}")
        return await generate(request, edit_form_to_request(fields, images))

    app.add_api_route(
        "/v1/images/edits",
        edit,
        methods=["POST"],
        response_model=ImagesResponse,
        responses=ERROR_RESPONSES,
        summary="OpenAI image edits: multipart image[] files + prompt, mapped onto the same generation",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["model", "prompt", "image[]"],
                            "properties": {
                                "image[]": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                    "description": "Reference images (1..14), any of jpeg, png, webp, bmp, tiff, gif.",
                                },
                                "model": {"type": "string"},
                                "prompt": {"type": "string"},
                                "n": {"type": "integer"},
                                "size": {"type": "string"},
                                "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                                "output_format": {"type": "string", "enum": ["jpeg", "png", "webp"]},
                                "watermark": {"type": "boolean"},
                                "seed": {"type": "integer"},
                                "sequential_image_generation": {"type": "string", "enum": ["auto", "disabled"]},
                                "stream": {"type": "boolean"},
                                "guidance_scale": {"type": "number"},
                                "optimize_prompt_options": {
                                    "type": "string",
                                    "description": 'JSON object, e.g. {"mode": "fast"}',
                                },
                                "sequential_image_generation_options": {
                                    "type": "string",
                                    "description": 'JSON object {"max_images": N}, or send the flattened '
                                    "field sequential_image_generation_options[max_images]",
                                },
                                "quality": {"type": "string", "description": "Accepted and ignored."},
                                "style": {"type": "string", "description": "Accepted and ignored."},
                                "user": {"type": "string", "description": "End-user id, logged."},
                                "mask": {"type": "string", "format": "binary", "description": "Refused: 400."},
                            },
                        }
                    }
                },
            }
        },
    )

    async def list_models(request: Request) -> dict[str, Any]:
        created = int(time.time())
        key: ApiKey | None = getattr(request.state, "api_key", None)
        return {
            "object": "list",
            "data": [
                {
                    "id": served.name,
                    "object": "model",
                    "created": created,
                    "owned_by": "seedream-server",
                    "engine": served.engine.kind,
                    "aliases": list(served.aliases),
                    "max_references": served.engine.capabilities.max_references,
                    "description": served.engine.capabilities.description,
                }
                for served in models.values()
                if key is None or not key.models or {served.name, *served.aliases} & set(key.models)
            ],
        }

    app.add_api_route("/v1/models", list_models, methods=["GET"], summary="Served models")
    app.add_api_route("/api/v3/models", list_models, methods=["GET"], summary="Served models", name="ark_models")

    @app.head("/files/{name}", include_in_schema=False)
    @app.get(
        "/files/{name}",
        summary="A generated image behind a signed link",
        responses={
            200: {"content": {t: {} for t in CONTENT_TYPES.values()}, "description": "The image bytes."},
            403: {"model": ErrorResponse, "description": "Missing, tampered or expired expires/signature."},
            404: {"model": ErrorResponse, "description": "No such image, or deleted after retention."},
        },
    )
    async def get_file(name: str, expires: str | None = None, signature: str | None = None) -> FileResponse:
        path = storage.open_path(name, expires, signature)
        match = NAME_PATTERN.match(name)
        assert match is not None  # open_path checked it
        return FileResponse(
            path, media_type=CONTENT_TYPES[match.group(2)], headers={"Cache-Control": "private, max-age=3600"}
        )

    playground = (importlib.resources.files("seedream_server") / "assets" / "playground.html").read_text("utf-8")

    @app.get("/", summary="Playground page", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(playground)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: every engine started")
    async def readyz() -> JSONResponse:
        ready = bool(state["ready"]) and not state["draining"]
        status = "draining" if state["draining"] else "ready" if ready else "starting"
        body = {"status": status, "models": sorted(models)}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        """The generated schema, less FastAPI's 422: validation failures are Ark 400s here."""
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
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


async def _sweep_forever(storage: LocalStorage, interval: float) -> None:
    while True:
        try:
            deleted = await storage.sweep()
            if deleted:
                log.info("sweeper deleted %d expired images", deleted)
        except Exception:
            log.exception("sweeper failed")
        await asyncio.sleep(interval)
