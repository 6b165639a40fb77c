"""Running the app under uvicorn: graceful drain on SIGTERM, and a header read timeout that uvicorn lacks
(a client that opens a connection and dribbles header bytes is cut off after ``http_read_timeout_s``)."""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Settings


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers take longer than ``header_timeout``:
    from the connection's start, and from the first byte of each later request on a kept-alive connection."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting_for_headers():
            self._arm()  # a new request began arriving: its headers have header_timeout from its first byte
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # idle keep-alive connections close after timeout_keep_alive
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def run_server(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; on SIGTERM the app refuses new requests (503) while uvicorn stops
    accepting connections and lets in-flight requests, streams included, finish for up to shutdown_timeout_s."""
    from sse_starlette.sse import AppStatus

    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.begin_drain()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,  # uvicorn logs through the handlers configure_logging set (text or JSON)
        http=functools.partial(HeaderTimeoutH11Protocol, header_timeout=settings.http_read_timeout_s),  # type: ignore[arg-type]
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_s),
    )
    DrainingServer(config).run()
