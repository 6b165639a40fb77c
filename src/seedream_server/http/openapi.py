"""The OpenAPI document, true to the server: Ark error envelopes per status (no FastAPI 422), the bearer
security scheme on the routes that need a key, and each route's real media types.

Routes document what their handlers answer; :func:`install_openapi` adds what the middlewares answer on
their behalf (``middleware.AccessMiddleware``): 401 and 429 (throttled failed authentication) on the API
routes when keys are required, and 503 on every route that is closed while the server drains."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from ..protocol import CompletedEvent, ErrorResponse, PartialFailedEvent, PartialSucceededEvent, StreamErrorEvent
from .middleware import API_PREFIXES, OPEN_WHILE_DRAINING

ERROR_TEXT = {
    400: "Invalid or missing parameter (param names the field).",
    401: "Missing or invalid API key.",
    403: "Key not allowed this model.",
    404: "Unknown model.",
    429: "Images-per-minute limit, queue full, or too many failed authentications (Retry-After set).",
    500: "Internal error.",
    503: "The model is not loaded, the server is shutting down, or its key store is unavailable.",
}
AUTH_TEXT = {
    401: "Missing or invalid API key.",
    429: "Too many failed authentications from this client address (Retry-After set).",
    503: "The server is shutting down, or its key store is unavailable (Retry-After set).",
}
DRAINING_TEXT = "The server is shutting down and takes no new requests (Retry-After set)."
SECURITY_SCHEME = "bearerAuth"
REQUEST_ID_HEADER = {
    "X-Request-Id": {
        "description": "The request's id, also at the end of the error message.",
        "required": True,
        "schema": {"type": "string"},
    }
}
RETRY_AFTER_HEADER = {
    "Retry-After": {"description": "Seconds to wait before retrying, when known.", "schema": {"type": "string"}}
}
STREAM_EVENTS = (PartialSucceededEvent, PartialFailedEvent, CompletedEvent, StreamErrorEvent)


def errors_for(*statuses: int, **texts: str) -> dict[int | str, dict[str, Any]]:
    """Response docs for these error statuses, each an Ark envelope (``texts`` overrides by ``s404=...``)."""
    return {status: _error_doc(status, texts.get(f"s{status}", ERROR_TEXT[status])) for status in statuses}


def _error_doc(status: int, text: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": text, "headers": _error_headers(status)}


def _error_headers(status: int) -> dict[str, Any]:
    return REQUEST_ID_HEADER | (RETRY_AFTER_HEADER if status in (429, 503) else {})


def stream_doc() -> dict[str, Any]:
    """The 200 of a generation route: JSON (from ``response_model``), or with ``stream=true`` an event stream
    whose ``schema`` describes ONE event, as before OpenAPI 3.2: an event named by its type whose data is that
    event model as JSON (``components``), or the last event ``data: [DONE]``, unnamed (so of type message)."""
    named = [
        {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"const": event.model_fields["type"].default},
                "data": {
                    "type": "string",
                    "pattern": "^\\{",  # a JSON object: what tells it from [DONE] without decoding it
                    "contentMediaType": "application/json",
                    "contentSchema": _ref(event.__name__),
                },
            },
        }
        for event in STREAM_EVENTS
    ]
    done = {
        "type": "object",
        "required": ["data"],
        "properties": {"event": {"const": "message"}, "data": {"const": "[DONE]"}},  # unnamed: type "message"
    }
    return {
        "description": "JSON images response, or with stream=true a text/event-stream of "
        "image_generation.partial_succeeded / partial_failed / completed events (or error) and data: [DONE].",
        "content": {"text/event-stream": {"schema": {"oneOf": [*named, done]}}},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _event_components() -> dict[str, Any]:
    """The JSON schemas of the stream's event models, referenced by :func:`stream_doc`."""
    _, schema = models_json_schema(
        [(event, "serialization") for event in STREAM_EVENTS], ref_template="#/components/schemas/{model}"
    )
    return dict(schema.get("$defs", {}))


def _add_response(operation: dict[str, Any], status: int, text: str) -> None:
    """Document ``status`` on ``operation`` unless its route already does (with a more precise text)."""
    operation.setdefault("responses", {}).setdefault(str(status), _error_json(status, text))


def _error_json(status: int, text: str) -> dict[str, Any]:
    return {
        "description": text,
        "headers": _error_headers(status),
        "content": {"application/json": {"schema": _ref(ErrorResponse.__name__)}},
    }


def install_openapi(app: FastAPI, auth: bool) -> None:
    """Replace FastAPI's generator: no 422 (validation failures are Ark 400s), bearer auth where needed,
    and the middlewares' answers (401/429 with auth, 503 while draining) on the routes they guard."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for name, event_schema in _event_components().items():
            schemas.setdefault(name, event_schema)
        if auth:
            components["securitySchemes"] = {
                SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description": "An API key (sk-...)."}
            }
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                if path.startswith(API_PREFIXES):
                    if auth:
                        operation["security"] = [{SECURITY_SCHEME: []}]
                        for status, text in AUTH_TEXT.items():
                            _add_response(operation, status, text)
                    else:
                        responses.pop("401", None)
                if path not in OPEN_WHILE_DRAINING:
                    _add_response(operation, 503, DRAINING_TEXT)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
