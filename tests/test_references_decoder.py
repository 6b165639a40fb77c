"""The decoder pool (references/decoder.py): worker processes, one time budget per request, cancellation
that kills the worker, and a pool that carries on afterwards.

Waits are on events (a worker's socket connection and its end-of-file when the process dies), never on
the clock; every await has a generous safety limit so that a broken pool fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from functools import cache
from typing import TypeVar

import pytest
from PIL import Image

from references_support import PNG, png_with_rows, scan_flood_jpeg
from refserver import encode, solid
from seedream_server.errors import InvalidParameter
from seedream_server.references import FetchedReference, ImageFormat, ReferenceDecoder, decode_reference

T = TypeVar("T")
SAFETY_S = 120  # only for a broken pool; nothing here is expected to come near it


def work(data: bytes, fmt: ImageFormat, max_pixels: int | None) -> Image.Image:
    """Runs in the worker: ``hang:<port>`` reports to the test over loopback and blocks until killed,
    ``exit`` ends the process; anything else is decoded for real."""
    if data.startswith(b"hang:"):
        connection = socket.create_connection(("127.0.0.1", int(data[5:])))
        connection.sendall(b"started")
        connection.recv(1)  # the test never sends: only the process's death ends this
    if data == b"exit":
        os._exit(3)
    return decode_reference(data, fmt, max_pixels)


async def safely(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, SAFETY_S)


def ref(index: int, data: bytes, fmt: ImageFormat = "png", size: tuple[int, int] = (64, 48)) -> FetchedReference:
    return FetchedReference(index, data, fmt, *size)


@cache
def flood() -> bytes:
    return scan_flood_jpeg()


@pytest.fixture
async def decoder() -> AsyncIterator[ReferenceDecoder]:
    pool = ReferenceDecoder(workers=1, timeout_s=SAFETY_S, work=work)
    yield pool
    await safely(pool.aclose())


class Listener:
    """A loopback socket a hanging worker connects to: its connection proves the decode started, and its
    end-of-file proves the worker process is gone."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.conn: socket.socket | None = None

    async def started(self) -> None:
        loop = asyncio.get_running_loop()
        self.conn, _ = await safely(loop.sock_accept(self.sock))
        assert await safely(loop.sock_recv(self.conn, 7)) == b"started"

    async def worker_died(self) -> bool:
        assert self.conn is not None
        return await safely(asyncio.get_running_loop().sock_recv(self.conn, 1)) == b""

    def close(self) -> None:
        for sock in (self.conn, self.sock):
            if sock is not None:
                sock.close()


async def still_works(pool: ReferenceDecoder) -> None:
    [image] = await safely(pool.decode([ref(0, PNG)], None))
    assert image.mode == "RGB" and image.size == (64, 48)


async def test_decodes_in_order_downscaled(decoder: ReferenceDecoder) -> None:
    big = encode(Image.linear_gradient("L").resize((1200, 900)).convert("RGB"), "jpeg")
    refs = [ref(0, PNG), ref(1, big, "jpeg", (1200, 900)), ref(2, encode(solid((90, 160)), "webp"), "webp", (90, 160))]
    images = await safely(decoder.decode(refs, 120_000))
    assert [image.size for image in images] == [(64, 48), (400, 300), (90, 160)]
    assert all(image.mode == "RGB" for image in images)
    assert await decoder.decode([], None) == []


async def test_refusal_names_the_lowest_failing_index(decoder: ReferenceDecoder) -> None:
    refs = [ref(0, PNG), ref(1, png_with_rows(6000, 6000, 16), size=(6000, 6000)), ref(2, PNG[:100])]
    with pytest.raises(InvalidParameter) as info:
        await safely(decoder.decode(refs, None))
    assert info.value.param == "image"
    assert info.value.message.startswith("image[1]: png image data ends after 288016 of 108006000 bytes")
    await still_works(decoder)


async def test_a_slow_decode_is_stopped_at_the_budget() -> None:
    pool = ReferenceDecoder(workers=1, timeout_s=0.2)  # the real decoder, on a scan flood it would take seconds
    try:
        with pytest.raises(InvalidParameter) as info:
            await safely(pool.decode([ref(0, flood(), "jpeg", (6000, 6000))], None))
        assert info.value.param == "image"
        assert info.value.message.startswith("image[0]: took longer than 0.2 s to decode")
        pool.timeout_s = SAFETY_S
        await still_works(pool)
    finally:
        await safely(pool.aclose())


async def test_timeout_kills_the_worker(decoder: ReferenceDecoder) -> None:
    listener = Listener()
    try:
        await still_works(decoder)  # a warm worker takes the next task at once, well within the budget
        decoder.timeout_s = 2.0
        with pytest.raises(InvalidParameter, match=r"^image\[0\]: took longer than 2 s to decode"):
            await safely(decoder.decode([ref(0, f"hang:{listener.port}".encode())], None))
        await listener.started()  # it did start (the hang never ends: only the budget ended the call)
        assert await listener.worker_died()
        decoder.timeout_s = SAFETY_S
        await still_works(decoder)
    finally:
        listener.close()


async def test_cancelling_the_request_kills_its_worker(decoder: ReferenceDecoder) -> None:
    listener = Listener()
    try:
        task = asyncio.create_task(decoder.decode([ref(0, f"hang:{listener.port}".encode())], None))
        await listener.started()
        task.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await listener.worker_died()
        await still_works(decoder)  # one worker, replaced
    finally:
        listener.close()


async def test_a_crashing_worker_is_a_400_and_replaced(decoder: ReferenceDecoder) -> None:
    with pytest.raises(InvalidParameter) as info:
        await safely(decoder.decode([ref(0, PNG), ref(1, b"exit")], None))
    assert info.value.message == "image[1]: the decoder stopped on this png image (exit 3)"
    await still_works(decoder)


async def test_settings_and_arguments() -> None:
    from seedream_server.config import Settings

    pool = ReferenceDecoder.from_settings(Settings(reference_decode_workers=3, reference_decode_timeout_s=2.5))
    assert (pool.workers, pool.timeout_s) == (3, 2.5)
    await pool.aclose()  # never started: nothing to wait for
    with pytest.raises(ValueError, match="at least one worker"):
        ReferenceDecoder(0, 1.0)
