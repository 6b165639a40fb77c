"""Memory stays bounded under the worst-case reference load of issue 10 (item 3), and a JPEG whose header
promises more than its data holds is refused end to end.

The load: every place a model has (``--max-concurrency 2`` running + ``--max-queue 16`` waiting) taken
at once by a request with 14 references that are 6000x6000 palette PNGs (~45 KB each, 108 MB each as
RGB). Before the fix the server decoded all of them up front and held them: 4.1 GB peak. Now references
stay compressed while a job waits, are decoded when its slot comes (in the decoder's worker processes,
downscaled to what the engine uses), and a server-wide budget of decoded pixels answers 429
``ServerOverloaded`` past it. The test reads the peak (``VmHWM``) of the server and of every process
under it and holds it to a generous 3 GB; the precise figure is ``bench/bench_hostile.py``'s.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from accounts_support import ledger_rows
from conftest import LiveServer, start_server, stop_server
from hostile import WORST_CASE_REFERENCES, ProcessTreeSampler, corrupt_header_jpeg, palette_png, worst_case_body
from refserver import data_uri
from seedream_server.accounts import UsageRecord
from seedream_server.references import FetchedReference, ImageFormat, ReferenceDecoder
from support import GENERATIONS, assert_error, body, wait_until

MAX_CONCURRENCY, MAX_QUEUE = 2, 16
ADMITTED = MAX_CONCURRENCY + MAX_QUEUE
PIXEL_BUDGET_MP = 4 * WORST_CASE_REFERENCES * 1.05  # four jobs of 14 references decoded to 1024x1024
BOUND_KIB = 3 * 1024 * 1024  # generous: the goal is 1.5 GB, before the fix it was 4.1 GB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A preview-engine server with the default queue.

    Two settings differ from the defaults, to keep the test short and steady on a busy 2-core machine:
    a decoded-pixel budget of four such jobs (2 running, 2 waiting with their references compressed:
    the rest of the load is the budget's 429s) instead of 13 of them, which only adds jobs that wait
    with compressed references and minutes of decoding (the default-budget figure is the bench's); and
    a decode time budget that a busy machine never turns into 400s (this test is about memory).
    """
    options = ["--max-concurrency", str(MAX_CONCURRENCY), "--max-queue", str(MAX_QUEUE)]
    options += ["--max-decoded-megapixels", str(PIXEL_BUDGET_MP), "--reference-decode-timeout-s", "300"]
    running = start_server(tmp_path_factory.mktemp("memory"), "--no-auth", *options)
    yield running
    stop_server(running)


ledger = ledger_rows


def test_worst_case_reference_load_stays_under_the_bound(server: LiveServer) -> None:
    request = worst_case_body()
    assert len(request["image"]) == WORST_CASE_REFERENCES
    assert sum(len(palette_png(6000, 2 + i % 5)) for i in range(WORST_CASE_REFERENCES)) < 1_000_000
    sampler = ProcessTreeSampler(server.process.pid, interval=0.1).start()
    try:
        with httpx.Client(timeout=600) as client, ThreadPoolExecutor(ADMITTED) as pool:
            responses = list(
                pool.map(lambda _: client.post(f"{server.url}{GENERATIONS}", json=request), range(ADMITTED))
            )
    finally:
        sampler.stop()
    # every request ends: generated, or refused by the queue or the decoded-pixel budget; nothing lost
    ok = [r for r in responses if r.status_code == 200]
    for response in responses:
        if response.status_code != 200:
            assert_error(response, 429, "ServerOverloaded")
    assert len(ok) >= 4, "the jobs the decoded-pixel budget holds were not all served"
    for response in ok:
        assert response.json()["usage"]["generated_images"] == 1
    assert sampler.peak_kib < BOUND_KIB, (
        f"peak {sampler.peak_kib / 1024:.0f} MiB over {sampler.processes} processes "
        f"(server {sampler.server_peak_kib / 1024:.0f} MiB)"
    )
    # and every request has its closed ledger row
    ids = {r.headers["x-request-id"] for r in responses}

    def closed() -> list[UsageRecord]:
        rows = [row for row in ledger(server.data_dir) if row.request_id in ids]
        return rows if len(rows) == ADMITTED and all(row.status != "running" for row in rows) else []

    rows = wait_until(closed, "every request of the load has a closed ledger row")
    assert sorted(row.status for row in rows) == sorted(
        "ok" if r.status_code == 200 else "ServerOverloaded" for r in responses
    )


def test_corrupt_header_jpeg_is_refused_end_to_end(server: LiveServer) -> None:
    corrupt = corrupt_header_jpeg()
    assert len(corrupt) < 2000  # 16x16 of data under a 6000x6000 header
    response = httpx.post(
        f"{server.url}{GENERATIONS}", json=body(image=data_uri(corrupt, "jpeg"), size="1K"), timeout=120
    )
    error = assert_error(response, 400, "InvalidParameter", param="image")
    assert error["message"].startswith("image[0]: ")
    assert "too short for its 6000x6000 header" in error["message"]
    # the same as one of several references: the index names it
    many = [data_uri(palette_png(600, 3), "png"), data_uri(corrupt, "jpeg")]
    response = httpx.post(f"{server.url}{GENERATIONS}", json=body(image=many, size="1K"), timeout=120)
    error = assert_error(response, 400, "InvalidParameter", param="image")
    assert error["message"].startswith("image[1]: ")


# -- the decode budget under that load ---------------------------------------------------------------
# With the default budget (10 s) the worst-case load above refused most admitted requests with 400
# "took longer than 10 s to decode": the two running jobs' references shared the decoder's workers, and
# a job's budget ran while its references waited behind the other job's. A request's budget is its own
# decoding; the test below holds one request's decode open past the other's budget.

SAFETY_S = 120


def gated(data: bytes, fmt: ImageFormat, max_pixels: int | None) -> Image.Image:
    """Runs in a decoder worker: tells the test (over loopback) that it started, then waits for its word."""
    with socket.create_connection(("127.0.0.1", int(data))) as connection:
        connection.sendall(b"started")
        connection.recv(1)
    return Image.new("RGB", (8, 8))


async def test_a_request_budget_is_not_spent_waiting_behind_another() -> None:
    budget = 8.0  # each request below uses 0.6 of it (slack for a loaded machine), the two together 1.2
    decoder = ReferenceDecoder(workers=1, timeout_s=budget, work=gated)
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.setblocking(False)
        port = str(gate.getsockname()[1]).encode()

        async def started() -> socket.socket:
            connection, _ = await asyncio.wait_for(loop.sock_accept(gate), SAFETY_S)
            assert await asyncio.wait_for(loop.sock_recv(connection, 7), SAFETY_S) == b"started"
            return connection

        try:
            first = asyncio.create_task(decoder.decode([FetchedReference(0, port, "png", 8, 8)], None))
            first_worker = await started()  # the only worker decodes the first request's reference
            second = asyncio.create_task(decoder.decode([FetchedReference(0, port, "png", 8, 8)], None))
            await asyncio.sleep(0.6 * budget)  # within the first request's budget
            first_worker.sendall(b"!")
            assert len(await asyncio.wait_for(first, SAFETY_S)) == 1
            second_worker = await started()
            await asyncio.sleep(0.6 * budget)  # the second request has waited 1.2 budgets, decoded for 0.6
            second_worker.sendall(b"!")
            assert len(await asyncio.wait_for(second, SAFETY_S)) == 1
            for connection in (first_worker, second_worker):
                connection.close()
        finally:
            await asyncio.wait_for(decoder.aclose(), SAFETY_S)
