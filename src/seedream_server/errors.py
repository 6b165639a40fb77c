"""The error tree: every failure the server reports, with its HTTP status, Ark code and parameter.

Errors are raised, never returned. The HTTP layer renders any :class:`SeedreamError` as the Ark
envelope ``{"error": {"code", "message", "param", "type"}}``; anything else becomes a 500
``InternalServiceError`` without a stack trace in the body.

::

    SeedreamError (500 InternalServiceError)
    ├── BadRequestError (400)
    │   ├── MissingParameter
    │   ├── InvalidParameter
    │   └── SensitiveContentDetected  (Input/Output Text/Image codes)
    ├── AuthenticationError (401)
    ├── AccessDenied (403)
    ├── NotFoundError (404 InvalidEndpointOrModel.NotFound)
    ├── RateLimitError (429)
    │   ├── IpmRateLimitExceeded (ModelAccountIpmRateLimitExceeded)
    │   ├── AuthenticationThrottled (TooManyAuthenticationFailures)
    │   └── ServerOverloaded
    ├── ClientDisconnected (499, never seen by the client that left)
    ├── UpstreamError (502 UpstreamServiceError: an upstream engine refused or broke)
    │   └── UpstreamTimeout (504)
    ├── ServiceUnavailable (503)
    │   └── UpstreamUnavailable  (an upstream engine could not be reached)
    └── InternalServiceError (500)
        └── EngineError  (a backend failed while generating)
"""

from __future__ import annotations

SENTENCE_ENDS = (".", "!", "?", "。", "！", "？")  # a message ending otherwise gets "." before the request id


class SeedreamError(Exception):
    """Base of every error the server reports to clients."""

    status: int = 500
    code: str = "InternalServiceError"
    type: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def envelope(self, request_id: str | None = None) -> dict[str, object]:
        """The Ark error body, with the request id appended to the message."""
        message = self.message
        if request_id:
            stop = "" if message.rstrip().endswith(SENTENCE_ENDS) else "."
            message = f"{message.rstrip()}{stop} Request id: {request_id}"
        body: dict[str, object] = {"code": self.code, "message": message, "type": self.type}
        if self.param is not None:
            body["param"] = self.param
        return {"error": body}


class BadRequestError(SeedreamError):
    status = 400
    code = "InvalidParameter"
    type = "invalid_request_error"


class MissingParameter(BadRequestError):
    code = "MissingParameter"


class InvalidParameter(BadRequestError):
    code = "InvalidParameter"


class SensitiveContentDetected(BadRequestError):
    """A moderation hook refused a prompt, a reference or an output image."""

    code = "InputTextSensitiveContentDetected"


class AuthenticationError(SeedreamError):
    status = 401
    code = "AuthenticationError"
    type = "authentication_error"


class AccessDenied(SeedreamError):
    status = 403
    code = "AccessDenied"
    type = "forbidden"


class NotFoundError(SeedreamError):
    status = 404
    code = "InvalidEndpointOrModel.NotFound"
    type = "not_found"


class RateLimitError(SeedreamError):
    status = 429
    code = "ServerOverloaded"
    type = "rate_limit_exceeded"


class IpmRateLimitExceeded(RateLimitError):
    code = "ModelAccountIpmRateLimitExceeded"


class AuthenticationThrottled(RateLimitError):
    """A client address failed to authenticate too often; it must wait before trying again."""

    code = "TooManyAuthenticationFailures"


class ServerOverloaded(RateLimitError):
    code = "ServerOverloaded"


class ClientDisconnected(SeedreamError):
    """The client went away before its response was ready; its job was cancelled."""

    status = 499
    code = "ClientDisconnected"
    type = "client_closed_request"


class UpstreamError(SeedreamError):
    """An upstream engine (a relay's Ark or OpenAI-compatible server) failed: an answer that is not an image,
    a refused upstream key, an upstream 5xx. The message says the upstream failed; it never holds keys."""

    status = 502
    code = "UpstreamServiceError"
    type = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "UpstreamTimeout"


class ServiceUnavailable(SeedreamError):
    status = 503
    code = "ServiceUnavailable"
    type = "service_unavailable"


class UpstreamUnavailable(ServiceUnavailable):
    """An upstream engine could not be reached (connection refused, every replica down)."""

    code = "UpstreamUnavailable"


class InternalServiceError(SeedreamError):
    status = 500
    code = "InternalServiceError"


class EngineError(InternalServiceError):
    """A backend failed while generating; stops a group."""
