"""``kill -9`` in the middle of a group, then a restart on the same data directory (issue 10, item 5).

A real ``seedream serve`` process (preview engine, API keys on) streams a 4K group of 10 images; after
the first ``image_generation.partial_succeeded`` event the test kills it with SIGKILL, so nothing of the
job settles. The next start on the same data directory must find the request's ledger row
``interrupted`` with the images delivered so far counted (as many as are stored under its request id),
and the key's images-per-minute window must still hold what the dead process took.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from accounts_support import bearer, ledger_rows
from conftest import LiveServer, start_server, stop_server
from hostile import descendants
from seedream_server.accounts import AccountStore, IpmLimiter
from support import GENERATIONS, assert_error, body, iter_sse, wait_until

IPM = 12
GROUP = body(
    size="4K",
    prompt="生成10张猫的图片",
    sequential_image_generation="auto",
    sequential_image_generation_options={"max_images": 10},
    response_format="url",
    stream=True,
)


def group(images: int) -> dict[str, object]:
    """A small (1280x720) group of ``images`` images: the way to ask for up to 15 at once."""
    return body(
        prompt=f"生成{images}张猫的图片",
        sequential_image_generation="auto",
        sequential_image_generation_options={"max_images": images},
    )


def create_key(data_dir: Path) -> str:
    """``seedream keys create --name k --ipm 12``: the key is the last line of its stdout."""
    command = [sys.executable, "-m", "seedream_server.cli", "keys", "create", "--name", "k", "--ipm", str(IPM)]
    done = subprocess.run(
        [*command, "--data-dir", str(data_dir)], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.strip().splitlines()[-1]


ledger = ledger_rows


def window_used(data_dir: Path) -> int:
    """Images the key ``k`` has in its images-per-minute window now, as the database holds it."""
    store = AccountStore.open(data_dir)
    try:
        return IpmLimiter(store).used("k")
    finally:
        store.close()


def kill_tree(server: LiveServer, children: list[int]) -> None:
    """SIGKILL the server, then ``children``, the processes it had started (none is left to clean up)."""
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=60)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Crashed:
    """What the client saw of the killed request."""

    def __init__(self, request_id: str, received: int) -> None:
        self.request_id = request_id
        self.received = received


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Crashed, LiveServer, str]]:
    """Stream the group, kill -9 the server at its first image, restart it on the same data directory.

    Once per module: the tests below read the same crash, in order (the last one spends the window).
    """
    tmp_path = tmp_path_factory.mktemp("crash")
    key = create_key(tmp_path / "data")
    first = start_server(tmp_path)
    received, children = 0, descendants(first.process.pid)
    try:
        with httpx.stream(
            "POST", f"{first.url}{GENERATIONS}", json=GROUP, headers=bearer(key), timeout=120
        ) as response:
            assert response.status_code == 200, response.read()
            request_id = response.headers["x-request-id"]
            children = descendants(first.process.pid)  # listed now: the kill must follow the event at once
            for event in iter_sse(response):
                if event.event == "image_generation.partial_succeeded":
                    received += 1
                    kill_tree(first, children)  # nothing of the job settles: no close_entry, no reservation settled
                    break
                assert event.event != "image_generation.completed", "the group ended before the kill"
    finally:
        if first.process.poll() is None:
            kill_tree(first, children)
    assert received == 1
    second = start_server(tmp_path)  # same tmp_path: the same data directory, a new port
    try:
        yield Crashed(request_id, received), second, key
    finally:
        stop_server(second)


def test_interrupted_row_counts_the_stored_images(crashed: tuple[Crashed, LiveServer, str]) -> None:
    job, server, _key = crashed
    stored = sorted(server.data_dir.joinpath("images").glob(f"{job.request_id}_*.jpeg"))
    rows = [row for row in ledger(server.data_dir) if row.request_id == job.request_id]
    assert len(rows) == 1
    row = rows[0]
    assert row.status == "interrupted"
    assert row.key_name == "k"
    assert row.images >= job.received  # every image the client was told about is accounted for
    assert row.images == len(stored)  # and every image stored under the request id
    assert 1 <= row.images < 10
    assert row.tokens > 0


def test_images_per_minute_window_survives_the_crash(crashed: tuple[Crashed, LiveServer, str]) -> None:
    job, server, key = crashed
    (row,) = [r for r in ledger(server.data_dir) if r.request_id == job.request_id]
    # the dead process's images are still in the key's window after the restart
    assert window_used(server.data_dir) >= row.images
    left = IPM - row.images
    response = httpx.post(f"{server.url}{GENERATIONS}", json=group(left + 1), headers=bearer(key), timeout=120)
    assert_error(response, 429, "ModelAccountIpmRateLimitExceeded")


def test_window_holds_exactly_the_images_counted(crashed: tuple[Crashed, LiveServer, str]) -> None:
    job, server, key = crashed
    (row,) = [r for r in ledger(server.data_dir) if r.request_id == job.request_id]
    left = IPM - row.images
    response = httpx.post(f"{server.url}{GENERATIONS}", json=group(left), headers=bearer(key), timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["generated_images"] == left
    assert_error(
        httpx.post(f"{server.url}{GENERATIONS}", json=body(), headers=bearer(key), timeout=120),
        429,
        "ModelAccountIpmRateLimitExceeded",
    )
    assert wait_until(lambda: window_used(server.data_dir) == IPM, "the window is full")
