"""Hostile clients at the HTTP layer (issue 10): clients that stop reading, dribble headers or bodies,
tamper with links or scrape metrics. Socket-level cases run against a real ``seedream serve`` on
loopback; the rest in process. Every wait is on an event (a response, a closed socket, a log line);
the bounds are safety nets."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import LiveServer, start_server, stop_server
from seedream_server.accounts import AccountStore
from seedream_server.config import Settings
from seedream_server.http import create_app
from support import GENERATIONS, MODEL, assert_error, body, running, wait_until

SEND_TIMEOUT_S = 1
READ_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with short client timeouts and the default two engine slots."""
    server = start_server(
        tmp_path_factory.mktemp("hostile"),
        "--no-auth",
        "--stream-send-timeout-s",
        str(SEND_TIMEOUT_S),
        "--http-read-timeout-s",
        str(READ_TIMEOUT_S),
        "--max-concurrency",
        "2",
    )
    yield server
    stop_server(server)


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _connect(server: LiveServer, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # a tiny window: the server's sends block as soon as we stop reading
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(60)  # a safety net against a hang; the tests wait for the server to act
    sock.connect(("127.0.0.1", _port(server)))
    return sock


def _post(path: str, payload: dict[str, object]) -> bytes:
    data = json.dumps(payload).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return (head + f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def _read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_two_streaming_clients_that_never_read_do_not_stop_generation(strict_server: LiveServer) -> None:
    # 1. two clients ask for big streamed groups (4K b64 images) and never read a byte of the answer
    hostile = body(
        prompt="生成6张风景图",
        size="4K",
        sequential_image_generation="auto",
        sequential_image_generation_options={"max_images": 6},
        stream=True,
    )
    stalled = [_connect(strict_server, receive_buffer=4096) for _ in range(2)]
    for sock in stalled:
        sock.sendall(_post(GENERATIONS, hostile))
    # 2. both hold an engine slot until the send timeout gives their slots back: an unrelated request completes
    with httpx.Client(base_url=strict_server.url, timeout=120) as client:
        response = client.post(GENERATIONS, json=body(seed=5))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["generated_images"] == 1
    # 3. the server says why it gave up on them
    wait_until(lambda: strict_server.log.read_text().count("client did not read") >= 2, "both stalled clients cut off")
    # 4. their jobs were cancelled and accounted for, with whatever images they had delivered
    store = AccountStore.open(strict_server.data_dir)

    def others() -> list[str]:  # every row but the unrelated request's
        return sorted(row.status for row in store.usage_records() if row.status != "ok")

    wait_until(lambda: others() == ["cancelled", "cancelled"], "both stalled jobs settled as cancelled")
    store.close()
    for sock in stalled:
        sock.close()


def test_headers_dribbled_slower_than_the_read_timeout_close_the_connection(strict_server: LiveServer) -> None:
    with _connect(strict_server) as sock:
        sock.sendall(b"POST /api/v3/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        assert _read_until_closed(sock) == b""  # closed by the server, without an answer


def test_a_silent_connection_is_closed(strict_server: LiveServer) -> None:
    with _connect(strict_server) as sock:
        assert _read_until_closed(sock) == b""


def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request(strict_server: LiveServer) -> None:
    with _connect(strict_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 1")  # the next request's headers never end
        assert _read_until_closed(sock) == b""


def test_a_body_slower_than_the_read_timeout_gets_400(strict_server: LiveServer) -> None:
    with _connect(strict_server) as sock:
        head = f"POST {GENERATIONS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        sock.sendall((head + "Content-Length: 1000\r\n\r\n").encode() + b'{"model": ')  # and no more
        answer = _read_until_closed(sock)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), answer[:200]
    payload = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert payload["error"]["code"] == "InvalidParameter"
    assert "not received within" in payload["error"]["message"]


async def test_duplicated_signature_parameters_are_refused(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        r = await client.post(GENERATIONS, json=body(response_format="url"))
        url = httpx.URL(r.json()["data"][0]["url"])
        path = f"{url.path}?{url.query.decode()}"
        assert (await client.get(path)).status_code == 200
        assert_error(await client.get(path + "&signature=" + "0" * 64), 403, "AccessDenied")
        assert_error(await client.get(path + "&expires=1"), 403, "AccessDenied")


async def test_metrics_token_protects_metrics(tmp_path: Path, settings: Settings) -> None:
    async with running(create_app(settings.with_overrides(metrics_token="t" * 24))) as client:
        assert_error(await client.get("/metrics"), 401, "AuthenticationError")
        assert_error(
            await client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401, "AuthenticationError"
        )
        r = await client.get("/metrics", headers={"Authorization": "Bearer " + "t" * 24})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert "seedream_requests" in r.text
    async with running(create_app(settings)) as client:  # off by default
        assert (await client.get("/metrics")).status_code == 200


async def test_a_lone_surrogate_in_the_model_is_a_400_not_a_500(settings: Settings) -> None:
    async with running(create_app(settings)) as client:
        raw = b'{"model": "\\ud800", "prompt": "x"}'
        r = await client.post(GENERATIONS, content=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 400, "InvalidParameter", param="model")
        raw = json.dumps({"model": MODEL, "prompt": "a"}).replace('"a"', '"a\\udfff"').encode()
        r = await client.post(GENERATIONS, content=raw, headers={"Content-Type": "application/json"})
        assert_error(r, 400, "InvalidParameter", param="prompt")
