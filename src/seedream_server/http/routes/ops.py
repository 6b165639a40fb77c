"""Operational routes: liveness, readiness, Prometheus metrics (optionally behind a token) and the
playground page."""

from __future__ import annotations

import hmac
import importlib.resources
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from ...errors import AuthenticationError
from ...metrics import Metrics
from ..openapi import errors_for


class Readiness(BaseModel):
    status: str  # "ready", "starting", "draining", or "unready" (an engine cannot serve: an upstream is down)
    models: list[str]
    unready: list[str] = []  # the models whose engine cannot serve now


def ops_router(metrics: Metrics, readiness: Callable[[], Readiness], metrics_token: str = "") -> APIRouter:
    router = APIRouter()
    playground = (importlib.resources.files("seedream_server") / "assets" / "playground.html").read_text("utf-8")

    @router.get("/", summary="Playground page", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(playground)

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: every engine started and not draining",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Starting, draining, or an engine cannot serve."}},
    )
    async def readyz() -> JSONResponse:
        state = readiness()
        return JSONResponse(state.model_dump(), status_code=200 if state.status == "ready" else 503)

    metrics_doc: dict[int | str, dict[str, Any]] = {
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format (not JSON).",
        }
    }
    if metrics_token:
        metrics_doc.update(errors_for(401, s401="Missing or wrong metrics token (--metrics-token)."))

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses=metrics_doc)
    async def get_metrics(request: Request) -> Response:
        if metrics_token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {metrics_token}".encode()):
                raise AuthenticationError("The metrics endpoint needs `Authorization: Bearer <metrics token>`.")
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
