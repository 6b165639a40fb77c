"""The pure-ASGI middlewares, outermost first: request context and id, client timeouts, access (drain,
authentication), body size limit. Each is small and wraps ``send``/``receive`` rather than buffering."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers

from ..accounts import Accounts
from ..errors import ClientDisconnected, InvalidParameter, SeedreamError, ServiceUnavailable
from ..logs import log_request
from ..metrics import Metrics
from .context import context_of_scope
from .errors import error_response

log = logging.getLogger("seedream_server.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIXES = ("/v1/", "/api/v3/")  # routes that need an API key (unless --no-auth)
OPEN_WHILE_DRAINING = frozenset({"/healthz", "/readyz", "/metrics"})


class HttpMiddleware:
    """Base of the middlewares here: HTTP requests go to :meth:`handle`, other scopes (lifespan) straight on."""

    app: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class ContextMiddleware(HttpMiddleware):
    """Gives every request its context (request id) and an ``X-Request-Id`` header; counts responses; ends
    every request with one structured log line (:func:`~seedream_server.logs.log_request`), refusals
    included: request id, method, path, status, error code, key name (never the key), model, duration."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of_scope(scope)
        request_id = ctx.request_id
        seen = _ResponseSeen()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                self.metrics.responses.labels(str(message["status"])).inc()
            seen.observe(message)
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            status, code = seen.outcome(failure)
            key = ctx.api_key.name if ctx.api_key is not None else "-"
            fields = {
                "request_id": request_id,
                "method": scope.get("method", "-"),
                "path": str(scope.get("path", ""))[:128],
                "status": status,
                "code": code,
                "key": key,
                "model": (ctx.model or "-")[:64],
                "duration_ms": ctx.elapsed_ms(),
            }
            log_request(fields, fields["path"])


class _ResponseSeen:
    """What a request's response said: its status and, for an error, the code of its JSON envelope."""

    MAX_ERROR_BYTES = 16 * 1024  # an envelope is small; a larger error body is not read for its code

    def __init__(self) -> None:
        self.status: int | None = None
        self.error_body: bytearray | None = None

    def observe(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            json_body = any(k.lower() == b"content-type" and b"json" in v for k, v in message.get("headers", []))
            self.error_body = bytearray() if self.status >= 400 and json_body else None
        elif message["type"] == "http.response.body" and self.error_body is not None:
            self.error_body += message.get("body", b"")[: self.MAX_ERROR_BYTES - len(self.error_body)]

    def outcome(self, failure: BaseException | None) -> tuple[int, str]:
        if self.status is None:  # no response was started: the client left, or an error escaped
            if failure is None or isinstance(failure, ClientDisconnected | asyncio.CancelledError):
                return ClientDisconnected.status, ClientDisconnected.code
            return SeedreamError.status, SeedreamError.code
        if self.error_body is None:
            return self.status, "-"
        try:
            code = json.loads(bytes(self.error_body))["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "-"
        return self.status, str(code)[:64]


class ClientTimeoutError(ClientDisconnected):
    """The client did not take a response message in time; the connection is given up (its job is
    settled as ``cancelled``, like a client that left)."""


class ClientTimeoutMiddleware(HttpMiddleware):
    """Bounds how long a client may take: to send each chunk of its body (``read_timeout`` -> 400) and to
    take each message of the response (``send_timeout`` -> the response is abandoned, which cancels its
    job and frees its engine slot). Waiting for a disconnect after the body is complete is not bounded."""

    def __init__(self, app: ASGIApp, read_timeout: float, send_timeout: float) -> None:
        self.app = app
        self.read_timeout = read_timeout
        self.send_timeout = send_timeout

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.read_timeout):
                    message = await receive()
            except TimeoutError:
                raise InvalidParameter(f"The request body was not received within {self.read_timeout:g} s.") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def timed_send(message: Message) -> None:
            try:
                async with asyncio.timeout(self.send_timeout):
                    await send(message)
            except TimeoutError:
                request_id = context_of_scope(scope).request_id
                log.warning("client did not read for %g s; giving up request_id=%s", self.send_timeout, request_id)
                raise ClientTimeoutError(f"The client did not read for {self.send_timeout:g} s.") from None

        try:
            await self.app(scope, timed_receive, timed_send)
        except* ClientTimeoutError:
            pass  # the server closes the connection: the response never completed


class AccessMiddleware(HttpMiddleware):
    """Refuses new requests while the server drains (503) and requires an API key on the API routes (401;
    429 for a client address that failed too often). The key found goes to the request context; a refused
    generation request goes to ``record_refusal`` (which writes the 401s to the ledger)."""

    def __init__(
        self,
        app: ASGIApp,
        accounts: Accounts,
        auth: bool,
        draining: Callable[[], bool],
        record_refusal: Callable[[Scope, SeedreamError], None] | None = None,
    ) -> None:
        self.app = app
        self.accounts = accounts
        self.auth = auth
        self.draining = draining
        self.record_refusal = record_refusal  # writes the ledger row of a refused generation request (401)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = context_of_scope(scope)
        path = scope["path"]
        error: SeedreamError | None = None
        if self.draining() and path not in OPEN_WHILE_DRAINING:
            error = ServiceUnavailable("The server is shutting down and takes no new requests.", retry_after=5)
        elif self.auth and path.startswith(API_PREFIXES):
            try:
                ctx.api_key = await self.accounts.authenticate(Headers(scope=scope).get("authorization"), ctx.client)
            except SeedreamError as exc:  # 401, or 429 for a client that failed too often
                error = exc
            except Exception:
                log.exception("key store unavailable request_id=%s", ctx.request_id)
                error = ServiceUnavailable("The API key store is unavailable; retry shortly.", retry_after=5)
        if error is not None:
            if self.record_refusal is not None:
                self.record_refusal(scope, error)
            await error_response(error, ctx.request_id)(scope, receive, send)
            return
        await self.app(scope, receive, send)


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
            await error_response(self._error(), context_of_scope(scope).request_id)(scope, receive, send)
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
