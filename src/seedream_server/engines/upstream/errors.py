"""Upstream failures translated into our error tree, at the boundary.

Every message is scrubbed (:func:`~.keys.scrub`): no upstream key and no URL with credentials reaches a
client, a log line or an exception. The upstream's code, message and ``param`` are kept where they mean
something to our client (a 400 stays a 400 naming the same parameter); failures of the upstream itself
(its keys refused, its 5xx, garbage, a cut stream) become 502/503/504 errors that say the upstream failed.

=========================  ===================================================  =========
upstream                   our error (status, code)                             retried
=========================  ===================================================  =========
400, 413, 422              400, the upstream's code (InvalidParameter) + param  no
401, 403                   502 UpstreamServiceError; the key cools down         next key
404                        502 UpstreamServiceError                             no
408                        504 UpstreamTimeout                                  yes
429                        429, the upstream's code (ServerOverloaded); the     yes
                           key cools down; Retry-After kept
500, 502, other 5xx        502 UpstreamServiceError                             yes
503                        503 UpstreamUnavailable                              yes
504, read/connect timeout  504 UpstreamTimeout                                  yes
connection refused/reset   503 UpstreamUnavailable                              yes
not JSON / no image        502 UpstreamServiceError                             no
=========================  ===================================================  =========
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from ...errors import (
    BadRequestError,
    RateLimitError,
    SeedreamError,
    SensitiveContentDetected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .keys import scrub
from .retry import Retryable, parse_retry_after

_REQUEST_ID_HEADERS = ("x-request-id", "x-tt-logid", "x-client-request-id")
_TRAILING_REQUEST_ID = re.compile(r"\s*Request id:\s*\S+\s*$", re.I)
_BAD_REQUEST_CODES = re.compile(r"^(InvalidParameter|MissingParameter|.*SensitiveContentDetected.*)")
MAX_MESSAGE_CHARS = 500


def request_id_of(response: httpx.Response, body: Any = None) -> str | None:
    """The upstream's id for a call: ``X-Request-Id``, Ark's ``x-tt-logid``, or an ``id`` in the body."""
    for name in _REQUEST_ID_HEADERS:
        if value := response.headers.get(name):
            return str(value)[:128]
    if isinstance(body, Mapping):
        for name in ("request_id", "id"):
            if isinstance(body.get(name), str):
                return str(body[name])[:128]
    return None


def _error_fields(body: Any) -> tuple[str | None, str, str | None]:
    """(code, message, param) from an Ark/OpenAI/vLLM/FastAPI error body, whatever of them it has."""
    if not isinstance(body, Mapping):
        return None, "", None
    error = body.get("error", body)
    if isinstance(error, str):
        return None, error, None
    if not isinstance(error, Mapping):
        return None, str(body.get("detail", "")), None
    code = error.get("code")
    if not isinstance(code, str) or not code:
        code = error.get("type") if isinstance(error.get("type"), str) else None
    message = error.get("message") or error.get("detail") or ""
    param = error.get("param")
    return code, str(message), param if isinstance(param, str) and param else None


def clean(message: str, secrets: Iterable[str]) -> str:
    """An upstream message fit for our client: scrubbed, without the upstream's request id, bounded."""
    message = _TRAILING_REQUEST_ID.sub("", scrub(message, secrets)).strip()
    return message[:MAX_MESSAGE_CHARS]


def error_from_code(code: str | None, message: str, param: str | None = None) -> SeedreamError:
    """An upstream error we know only by its code (a per-image failure, an SSE ``error`` event)."""
    code = code or "UpstreamServiceError"
    if "SensitiveContent" in code or "content_policy" in code:
        return SensitiveContentDetected(message, code=code, param=param)
    if _BAD_REQUEST_CODES.match(code):
        return BadRequestError(message, code=code, param=param)
    if "RateLimit" in code or code == "ServerOverloaded":
        return RateLimitError(message, code=code)
    if code == "InternalServiceError":
        return UpstreamError(message or "The upstream failed to generate this image.", code=code)
    return UpstreamError(message or "The upstream failed.", code=code)


def _parse(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def status_error(response: httpx.Response, secrets: Iterable[str]) -> SeedreamError | Retryable:
    """The error for a non-2xx upstream answer (body already read): raise it, or retry on a :class:`Retryable`."""
    status = response.status_code
    code, raw, param = _error_fields(_parse(response))
    message = clean(raw, secrets)
    said = f" ({status} {code or ''}: {message})".replace(" :", ":") if message or code else f" ({status})"
    if status in (400, 413, 422):
        return error_from_code(code if code and _BAD_REQUEST_CODES.match(code) else "InvalidParameter", message, param)
    if status in (401, 403):
        failure = UpstreamError(f"The upstream refused this server's credentials{said}.")
        return Retryable(failure, refused_key=True)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        wait = None if retry_after is None else max(1, round(retry_after))
        error = RateLimitError(
            f"The upstream is rate limited{said}.", code=code or "ServerOverloaded", retry_after=wait
        )
        return Retryable(error, retry_after)
    if status in (408, 504):
        return Retryable(UpstreamTimeout(f"The upstream timed out{said}."))
    if status == 503:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return Retryable(UpstreamUnavailable(f"The upstream is unavailable{said}."), retry_after)
    if status >= 500:
        return Retryable(UpstreamError(f"The upstream failed{said}."))
    return UpstreamError(f"The upstream refused the request{said}.")


def transport_error(exc: httpx.HTTPError, timeout_s: float) -> Retryable:
    """A connection that failed or timed out (the exception's own text may name hosts: it is not kept)."""
    if isinstance(exc, httpx.TimeoutException):
        return Retryable(UpstreamTimeout(f"The upstream did not answer within {timeout_s:g} s."))
    if isinstance(exc, httpx.ConnectError):
        return Retryable(UpstreamUnavailable("The upstream could not be reached."), other_target=True)
    return Retryable(UpstreamError(f"The upstream connection failed ({type(exc).__name__})."))


def malformed(what: str) -> UpstreamError:
    """An upstream answer we cannot read (garbage JSON, no image, a stream cut short)."""
    return UpstreamError(f"The upstream sent {what}.")
