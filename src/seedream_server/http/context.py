"""The one typed context of a request, set by the first middleware and read by everything after it."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from ..accounts import ApiKey

_KEY = "seedream"  # under scope["state"]


@dataclass
class RequestContext:
    """What the HTTP layer knows of a request beyond its body."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    client: str | None = None  # the peer address, for throttling failed authentication
    api_key: ApiKey | None = None  # the authenticated key (None with --no-auth)
    model: str | None = None  # the model a generation request named, once its body was read
    admitted: bool = False  # from here the job accounts for the request itself

    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)


def context_of_scope(scope: dict[str, Any] | Any) -> RequestContext:
    """The request's context, created on first use (so error handlers always find one)."""
    state = scope.setdefault("state", {})
    ctx = state.get(_KEY)
    if ctx is None:
        client = scope.get("client")
        ctx = state[_KEY] = RequestContext(client=client[0] if client else None)
    assert isinstance(ctx, RequestContext)
    return ctx


def context_of(request: Request) -> RequestContext:
    return context_of_scope(request.scope)
