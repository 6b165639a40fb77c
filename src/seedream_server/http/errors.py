"""Every error leaves as one Ark envelope (SPEC §9): our own errors, FastAPI's validation errors,
Starlette's HTTP errors (404, 405 with its ``Allow``) and anything unexpected (500, no stack trace).
Generation requests refused before their job was admitted get their ledger row here."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..accounts import NO_KEY, Accounts, UsageRecord
from ..errors import AuthenticationError, InvalidParameter, NotFoundError, SeedreamError
from ..metrics import Metrics
from ..models import ModelRegistry
from ..protocol import translate_validation_error
from .context import context_of, context_of_scope

log = logging.getLogger("seedream_server.http")

GENERATION_SUFFIXES = ("/images/generations", "/images/edits")  # routes written to the usage ledger


class ErrorJSONResponse(JSONResponse):
    """JSON that never fails to encode: text a client sent (a path, a lone surrogate) is escaped, not a 500."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", "backslashreplace")


def error_response(exc: SeedreamError, request_id: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The envelope of ``exc`` with its status, ``Retry-After`` when it has one."""
    extra = dict(headers or {})
    if exc.retry_after is not None:
        extra["Retry-After"] = str(exc.retry_after)
    return ErrorJSONResponse(exc.envelope(request_id), status_code=exc.status, headers=extra or None)


class RefusalRecorder:
    """The ledger row of a generation request refused before its job was admitted (the job writes its own).
    A 401 is recorded too, under the key name ``-`` (never any part of the key that failed)."""

    def __init__(self, accounts: Accounts, models: ModelRegistry, auth: bool) -> None:
        self.accounts = accounts
        self.models = models
        self.auth = auth

    def __call__(self, request: Request, error: SeedreamError) -> None:
        self.record(request.scope, error)

    def record(self, scope: MutableMapping[str, Any], error: SeedreamError) -> None:
        ctx = context_of_scope(scope)
        if not str(scope.get("path", "")).endswith(GENERATION_SUFFIXES) or ctx.admitted:
            return
        if self.auth and ctx.api_key is None and not isinstance(error, AuthenticationError):
            return  # a throttled or drained request before authentication: no row
        try:  # only served names reach the ledger, never what a client made up
            name = self.models.resolve(ctx.model).name if ctx.model else "-"
        except NotFoundError:
            name = "-"
        key_name = ctx.api_key.name if ctx.api_key is not None else NO_KEY
        self.accounts.record(UsageRecord(key_name, name, 0, 0, error.code, ctx.elapsed_ms(), ctx.request_id))


def install_error_handlers(app: FastAPI, record_refusal: RefusalRecorder, metrics: Metrics) -> None:
    """One error envelope for everything."""

    @app.exception_handler(SeedreamError)
    async def seedream_error(request: Request, exc: SeedreamError) -> JSONResponse:
        record_refusal(request, exc)
        return error_response(exc, context_of(request).request_id)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = translate_validation_error(exc)
        ctx = context_of(request)
        if isinstance(exc.body, dict) and isinstance(exc.body.get("model"), str):
            ctx.model = exc.body["model"]
        record_refusal(request, error)
        return error_response(error, ctx.request_id)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, SeedreamError):  # raised while FastAPI read the body (size limit, timeout)
            error: SeedreamError = exc.__cause__
        elif exc.status_code == 404:
            error = NotFoundError(f"The endpoint {request.url.path[:256]} does not exist.")
        else:
            error = InvalidParameter(str(exc.detail), code="InvalidRequest")
            error.status = exc.status_code
        return error_response(error, context_of(request).request_id, exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        ctx = context_of(request)
        log.exception("unhandled error request_id=%s", ctx.request_id)
        error = SeedreamError("The service encountered an unexpected internal error.")
        record_refusal(request, error)
        # this handler runs outside the context middleware (in Starlette's ServerErrorMiddleware): add its part
        metrics.responses.labels("500").inc()
        return error_response(error, ctx.request_id, {"X-Request-Id": ctx.request_id})
