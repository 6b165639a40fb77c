"""A real, scriptable upstream on 127.0.0.1 for the relay engines' fault tests.

Importable helper (not a conftest): ``from upstream_faults import FaultServer, Fail, Succeed, ...``.

:class:`FaultServer` is a threaded HTTP server on a free loopback port that speaks enough of the two
upstream shapes to return real (small, Pillow-made) images:

``POST /api/v3/images/generations``  Ark: JSON, or server-sent events when the body says ``"stream": true``
                                      (``image_generation.partial_succeeded`` per image, ``completed``,
                                      ``[DONE]``); a group when ``sequential_image_generation`` is ``auto``
``POST /v1/images/generations``       OpenAI: JSON in, ``{"created", "data": [...]}`` out (``n`` images)
``POST /v1/images/edits``             OpenAI: multipart (``image[]`` / ``image`` files, form fields)
``GET /files/<name>``                 the images it answered with ``response_format = url``
``GET`` anything else                 ``{"object": "list", "data": []}`` (a readiness probe's answer)

Each route (:data:`ARK`, :data:`OPENAI`, :data:`OPENAI_EDITS`) has a queue of behaviours, taken one per
call; an empty queue answers with ``server.default`` (:class:`Succeed` unless a test changes it):

* :class:`Succeed` (real images; per-image errors with ``failed``), :class:`Fail` (any status with an
  Ark/OpenAI error envelope, ``Retry-After``), :func:`invalid_parameter` (400 ``InvalidParameter`` naming
  a ``param``), :class:`Hang` (hold the call until ``server.release`` is set: a slow upstream past the
  caller's timeout), :class:`Garbage` (200 with a body that is not JSON), :class:`Cut` (an event stream,
  or a JSON body, that stops after ``after`` images without its end: the connection just drops).
* ``server.key_status = {"key-a": 401}`` answers every call made with that bearer key with that status,
  before the queue is looked at (a bad key in a pool).
* :func:`refused_port` is a loopback port with nothing listening (a replica that refuses connections).

Every call is recorded (:class:`Call`: route, headers with ``Authorization``, raw body, parsed JSON or
form and files, what it was answered with), in arrival order, so a test can assert what was sent:
retries, which key, which replica, which fields. ``wait_calls`` blocks a thread until calls arrive;
``arrived`` is the same for a test whose server runs on the event loop (it must not block the loop).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.parser
import email.policy
import io
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from PIL import Image

__all__ = [
    "ARK",
    "OPENAI",
    "OPENAI_EDITS",
    "Call",
    "Cut",
    "Fail",
    "FaultServer",
    "Garbage",
    "Hang",
    "Succeed",
    "invalid_parameter",
    "refused_port",
    "secrets_absent",
]

ARK = "ark"
OPENAI = "openai"
OPENAI_EDITS = "openai-edits"
ROUTES = {
    "/api/v3/images/generations": ARK,
    "/v1/images/generations": OPENAI,
    "/v1/images/edits": OPENAI_EDITS,
}
PRESETS = {"1K": 1024, "2K": 2048, "4K": 4096}
COLORS = [(200, 40, 40), (40, 160, 60), (40, 70, 200), (220, 180, 30), (150, 40, 170), (30, 170, 170)]
#: how long a held call waits for ``release`` at most: only a safety net against a hung test
HOLD_LIMIT_S = 120.0


# --- behaviours -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Succeed:
    """Answer with real images: Ark's group size (``max_images`` of an ``auto`` request, else 1) or
    OpenAI's ``n``, unless ``images`` says; ``failed`` maps an image index to the upstream error code of
    a per-image failure (Ark only)."""

    images: int | None = None
    failed: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fail:
    """Answer ``status`` with an error envelope ``{"error": {code, message, param, type}}``."""

    status: int
    code: str = "InternalServiceError"
    message: str = "The service encountered an unexpected internal error."
    param: str | None = None
    retry_after: str | None = None


def invalid_parameter(param: str, message: str | None = None) -> Fail:
    """Ark's 400 for a bad field: ``InvalidParameter`` naming ``param``."""
    text = message or f"The parameter `{param}` specified in the request is not valid: upstream says no."
    return Fail(400, "InvalidParameter", text, param=param)


@dataclass(frozen=True)
class Hang:
    """Hold the call (headers never sent) until ``server.release`` is set, then drop the connection."""


@dataclass(frozen=True)
class Garbage:
    """Answer 200 with ``body`` under ``content_type`` (by default: truncated, invalid JSON)."""

    body: bytes = b'{"data": [{"b64_json": "not base64 at all'
    content_type: str = "application/json"


@dataclass(frozen=True)
class Cut:
    """Start a good answer and drop the connection after ``after`` images: in an event stream, after that
    many ``partial_succeeded`` events (no ``completed``, no ``[DONE]``, no last chunk); in a JSON answer,
    halfway through a body whose ``Content-Length`` promised more."""

    after: int


Behaviour = Succeed | Fail | Hang | Garbage | Cut


# --- what was received --------------------------------------------------------------------------


@dataclass
class Call:
    """One request the server received, in arrival order (``seq``)."""

    seq: int
    route: str
    method: str
    path: str
    headers: dict[str, str]  # lowercased names
    body: bytes
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str, bytes]] = field(default_factory=list)  # (field name, filename, data)
    answer: str = ""  # the behaviour it got, e.g. "Fail(429)", "Succeed(2)", "key 401"
    arrived: float = 0.0  # time.monotonic() at arrival
    answered: float | None = None  # time.monotonic() once the answer was written (None: dropped or held)
    images: int = 0  # images written into the answer
    request_id: str = ""  # the X-Request-Id the server answered with

    @property
    def key(self) -> str | None:
        """The bearer key of ``Authorization`` (None without one)."""
        value = self.headers.get("authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    @property
    def fields(self) -> dict[str, Any]:
        """The request fields: the JSON body, or the multipart form's text fields."""
        return self.json if self.json is not None else dict(self.form)


def refused_port() -> int:
    """A loopback port with nothing listening: bound once to get a free number, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jpeg(width: int, height: int, index: int = 0) -> bytes:
    """A real JPEG of ``width`` x ``height`` (a flat colour per index, so images tell apart)."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), COLORS[index % len(COLORS)]).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        if value in PRESETS:
            return PRESETS[value], PRESETS[value]
        width, _, height = value.lower().partition("x")
        if width.isdigit() and height.isdigit():
            return int(width), int(height)
    return 1024, 1024


# --- the server -----------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive with Content-Length; event streams are chunked

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- writing ---------------------------------------------------------------------------------

    def _head(self, status: int, content_type: str, length: int | None, call: Call | None, **extra: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        if call is not None:
            self.send_header("X-Request-Id", call.request_id)
        for name, value in extra.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()

    def _send(self, status: int, payload: bytes, content_type: str, call: Call | None, **extra: str) -> None:
        self._head(status, content_type, len(payload), call, **extra)
        with contextlib.suppress(OSError):
            self.wfile.write(payload)
            self.wfile.flush()
        if call is not None:
            call.answered = time.monotonic()

    def _send_json(self, status: int, payload: Any, call: Call | None, **extra: str) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", call, **extra)

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    # -- reading ---------------------------------------------------------------------------------

    def _read_call(self, route: str) -> Call:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        call = Call(seq=0, route=route, method=self.command, path=self.path, headers=headers, body=raw)
        content_type = headers.get("content-type", "")
        if content_type.startswith("application/json"):
            with contextlib.suppress(ValueError):
                call.json = json.loads(raw)
        elif content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
            )
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition") or ""
                data = part.get_payload(decode=True) or b""
                filename = part.get_filename()
                if filename is None:
                    call.form[str(name)] = data.decode("utf-8", "replace")
                else:
                    call.files.append((str(name), filename, data))
        return call

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        with owner.lock:
            owner.gets.append(path)
        if path.startswith("/files/"):
            stored = owner.files.get(path[len("/files/") :])
            if stored is None:
                self._send_json(404, {"error": {"code": "NotFound", "message": "no such file"}}, None)
            else:
                self._send(200, stored, "image/jpeg", None)
            return
        self._send_json(200, {"object": "list", "data": []}, None)

    def do_POST(self) -> None:
        owner = self.server.owner
        route = ROUTES.get(urlsplit(self.path).path)
        if route is None:
            self._send_json(404, {"error": {"code": "NotFound", "message": f"no route {self.path}"}}, None)
            return
        call = self._read_call(route)
        behaviour = owner._record(call)
        try:
            self._answer(call, behaviour)
        except OSError:
            pass  # the caller hung up (a timeout on its side, a cancelled request)
        finally:
            owner._done(call)

    def _answer(self, call: Call, behaviour: Behaviour | int) -> None:
        owner = self.server.owner
        if isinstance(behaviour, int):  # a key the test marked bad
            call.answer = f"key {behaviour}"
            code = "AuthenticationError" if behaviour in (401, 403) else "RateLimitExceeded"
            error = {"code": code, "message": "The API key in the request is invalid.", "type": "Unauthorized"}
            self._send_json(behaviour, {"error": error}, call)
        elif isinstance(behaviour, Fail):
            call.answer = f"Fail({behaviour.status})"
            error = {"code": behaviour.code, "message": behaviour.message, "param": behaviour.param, "type": "Error"}
            extra = {"Retry_After": behaviour.retry_after} if behaviour.retry_after is not None else {}
            self._send_json(behaviour.status, {"error": error}, call, **extra)
        elif isinstance(behaviour, Hang):
            call.answer = "Hang"
            owner.release.wait(HOLD_LIMIT_S)
            self.close_connection = True
        elif isinstance(behaviour, Garbage):
            call.answer = "Garbage"
            self._send(200, behaviour.body, behaviour.content_type, call)
        elif call.route == ARK:
            self._ark(call, behaviour)
        else:
            self._openai(call, behaviour)

    def _image_items(self, call: Call, count: int, failed: dict[int, str]) -> list[dict[str, Any]]:
        fields = call.fields
        width, height = _size(fields.get("size"))
        as_url = fields.get("response_format", "url" if call.route == ARK else "b64_json") == "url"
        items: list[dict[str, Any]] = []
        for index in range(count):
            if index in failed:
                items.append({"error": {"code": failed[index], "message": f"image {index} failed upstream"}})
                continue
            data = jpeg(width, height, index)
            item: dict[str, Any] = {"size": f"{width}x{height}"}
            if as_url:
                item["url"] = self.server.owner._store(data)
            else:
                item["b64_json"] = base64.b64encode(data).decode("ascii")
            items.append(item)
        return items

    @staticmethod
    def _usage(items: list[dict[str, Any]]) -> dict[str, int]:
        done = [item for item in items if "error" not in item]
        tokens = sum(_size(item["size"])[0] * _size(item["size"])[1] // 256 for item in done)
        return {"generated_images": len(done), "output_tokens": tokens, "total_tokens": tokens}

    def _ark(self, call: Call, behaviour: Succeed | Cut) -> None:
        fields = call.fields
        count = behaviour.images if isinstance(behaviour, Succeed) else None
        if count is None:
            group = fields.get("sequential_image_generation") == "auto"
            options = fields.get("sequential_image_generation_options") or {}
            count = int(options.get("max_images", 15)) if group else 1
            if isinstance(behaviour, Cut):
                count = max(count, behaviour.after + 1)
        failed = behaviour.failed if isinstance(behaviour, Succeed) else {}
        items = self._image_items(call, count, failed)
        model, created = fields.get("model", ""), int(time.time())
        call.answer = f"{type(behaviour).__name__}({count})" + (" stream" if fields.get("stream") else "")
        if not fields.get("stream"):
            shown = items[: behaviour.after] if isinstance(behaviour, Cut) else items
            payload = {"model": model, "created": created, "data": shown, "usage": self._usage(shown)}
            data = json.dumps(payload).encode()
            if isinstance(behaviour, Cut):
                # the whole body's length is promised; only the part holding the first images is sent
                whole = json.dumps({**payload, "data": items, "usage": self._usage(items)}).encode()
                self._head(200, "application/json", len(whole), call)
                self.wfile.write(data[: data.rindex(b"]")])
                self.wfile.flush()
                call.images = len(shown)
                self.close_connection = True
                return
            call.images = len(shown) - sum(1 for item in shown if "error" in item)
            self._send(200, data, "application/json", call)
            return
        self._head(200, "text/event-stream", None, call, Cache_Control="no-cache")
        for index, item in enumerate(items):
            if isinstance(behaviour, Cut) and index == behaviour.after:
                self.close_connection = True  # no last chunk: the stream just ends
                return
            if "error" in item:
                kind = "image_generation.partial_failed"
                event = {"type": kind, "model": model, "created": created, "image_index": index, **item}
            else:
                kind = "image_generation.partial_succeeded"
                event = {"type": kind, "model": model, "created": created, "image_index": index, **item}
                call.images += 1
            self._chunk(f"event: {kind}\ndata: {json.dumps(event)}\n\n")
        usage = self._usage(items)
        done = {"type": "image_generation.completed", "model": model, "created": created, "usage": usage}
        self._chunk(f"event: image_generation.completed\ndata: {json.dumps(done)}\n\n")
        self._chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        call.answered = time.monotonic()

    def _openai(self, call: Call, behaviour: Succeed | Cut) -> None:
        fields = call.fields
        count = behaviour.images if isinstance(behaviour, Succeed) and behaviour.images else int(fields.get("n", 1))
        items = [{k: v for k, v in item.items() if k != "size"} for item in self._image_items(call, count, {})]
        call.answer = f"{type(behaviour).__name__}({count})"
        payload = {"created": int(time.time()), "data": items}
        data = json.dumps(payload).encode()
        if isinstance(behaviour, Cut):
            self._head(200, "application/json", len(data), call)
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        call.images = count
        self._send(200, data, "application/json", call)


class FaultServer:
    """A scriptable Ark/OpenAI image upstream on 127.0.0.1 (a free port); use as a context manager."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.release = threading.Event()  # lets every held (Hang) call go
        self.calls: list[Call] = []
        self.gets: list[str] = []
        self.files: dict[str, bytes] = {}
        self.key_status: dict[str, int] = {}
        self.default: Behaviour = Succeed()
        self.in_flight = 0
        self._queues: dict[str, deque[Behaviour]] = {route: deque() for route in ROUTES.values()}
        self._seq = itertools.count(1)
        self._server = _Server(self)
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.ark_base = f"{self.url}/api/v3"
        self.openai_base = f"{self.url}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name="upstream-faults", daemon=True)

    # -- scripting -------------------------------------------------------------------------------

    def script(self, route: str, *behaviours: Behaviour) -> FaultServer:
        """Append behaviours to ``route``'s queue (one is taken per call; then ``default``)."""
        with self.lock:
            self._queues[route].extend(behaviours)
        return self

    def pending(self, route: str) -> int:
        with self.lock:
            return len(self._queues[route])

    # -- what was received -----------------------------------------------------------------------

    def calls_to(self, route: str | None = None) -> list[Call]:
        with self.lock:
            return [call for call in self.calls if route is None or call.route == route]

    def keys(self, route: str | None = None) -> list[str | None]:
        """The bearer key of every call, in arrival order."""
        return [call.key for call in self.calls_to(route)]

    def wait_calls(self, count: int, route: str | None = None, within: float = 60.0) -> list[Call]:
        """Block this thread until ``count`` calls (to ``route``) arrived; ``within`` is a safety net."""
        with self.lock:
            if not self.lock.wait_for(lambda: len(self._matching(route)) >= count, timeout=within):
                raise AssertionError(f"never happened: {count} calls to {route or 'any route'}")
            return self._matching(route)

    async def arrived(self, count: int, route: str | None = None, within: float = 60.0) -> list[Call]:
        """:meth:`wait_calls` for a test whose server runs on this event loop (polls, never blocks it)."""
        deadline = time.monotonic() + within
        while True:
            calls = self.calls_to(route)
            if len(calls) >= count:
                return calls
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened: {count} calls to {route or 'any route'}")
            await asyncio.sleep(0.01)

    def _matching(self, route: str | None) -> list[Call]:
        return [call for call in self.calls if route is None or call.route == route]

    # -- used by the handler -------------------------------------------------------------------------

    def _record(self, call: Call) -> Behaviour | int:
        with self.lock:
            call.seq = next(self._seq)
            call.arrived = time.monotonic()
            call.request_id = f"upstream-{self.port}-{call.seq}"
            self.calls.append(call)
            self.in_flight += 1
            self.lock.notify_all()
            status = self.key_status.get(call.key or "")
            if status is not None:
                return status
            queue = self._queues[call.route]
            return queue.popleft() if queue else self.default

    def _done(self, call: Call) -> None:
        with self.lock:
            self.in_flight -= 1
            self.lock.notify_all()

    def _store(self, data: bytes) -> str:
        with self.lock:
            name = f"{next(self._seq)}.jpeg"
            self.files[name] = data
        return f"{self.url}/files/{name}"

    # -- life ------------------------------------------------------------------------------------

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def secrets_absent(texts: Iterable[str], keys: Iterable[str]) -> None:
    """Assert that no upstream key appears in any of ``texts`` (response bodies, log lines)."""
    for key in keys:
        for text in texts:
            assert key not in text, f"an upstream key leaked: ...{text[max(0, text.find(key) - 80) :][:200]}"
