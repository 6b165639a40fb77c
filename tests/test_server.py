"""The subprocess tier: a real ``seedream serve`` process, driven over the socket (SPEC §1, §7, §10, §13).

What only a socket proves: the link in a response is fetchable from the server that wrote it,
server-sent events arrive as separate chunks in the documented wire format, raw request lines with
dot segments never reach the data directory, and the command line works as documented.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from conftest import LiveServer, start_server, stop_server
from support import GENERATIONS, MODEL, OPENAI_GENERATIONS, SSEEvent, body, sse_events

LINK = {"size": "1K", "response_format": "url"}  # the socket tier fetches the links it is sent


def raw_request(server: LiveServer, request: bytes) -> tuple[int, dict[str, str], list[bytes]]:
    """Send ``request`` as is; return status, headers and the body as the list of chunks sent."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(request)
        received = []
        while data := sock.recv(1 << 16):
            received.append(data)
    raw = b"".join(received)
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") != "chunked":
        return int(status_line.split()[1]), headers, [rest]
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    return int(status_line.split()[1]), headers, chunks


def post_raw(server: LiveServer, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, str], list[bytes]]:
    data = json.dumps(payload).encode()
    host = urlsplit(server.url).netloc
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode() + data
    return raw_request(server, request)


def get_raw(server: LiveServer, target: str) -> tuple[int, dict[str, str], bytes]:
    host = urlsplit(server.url).netloc
    status, headers, chunks = raw_request(
        server, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    return status, headers, b"".join(chunks)


# --- generation and links over the socket -------------------------------------------------------


def test_url_response_link_is_fetchable_from_the_server(live_server: LiveServer) -> None:
    response = httpx.post(f"{live_server.url}{GENERATIONS}", json=body(**LINK, seed=3), timeout=60)
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
    payload = response.json()
    (item,) = payload["data"]
    assert item["size"] == "1024x1024"
    assert item["url"].startswith(f"{live_server.url}/files/")
    assert payload["usage"] == {"generated_images": 1, "output_tokens": 4096, "total_tokens": 4096, "input_images": 0}
    image = httpx.get(item["url"], timeout=30)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (1024, 1024)
    name = urlsplit(item["url"]).path.rsplit("/", 1)[1]
    assert (live_server.data_dir / "images" / name).read_bytes() == image.content


def test_b64_json_over_the_socket(live_server: LiveServer) -> None:
    payload = body(size="1280x720", response_format="b64_json", watermark=False, seed=9)
    response = httpx.post(f"{live_server.url}{OPENAI_GENERATIONS}", json=payload, timeout=60)
    data = base64.b64decode(response.json()["data"][0]["b64_json"])
    assert Image.open(io.BytesIO(data)).size == (1280, 720)


def test_error_over_the_socket_carries_the_request_id(live_server: LiveServer) -> None:
    response = httpx.post(f"{live_server.url}{GENERATIONS}", json=body(size="2048*2048"), timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("InvalidParameter", "size")
    assert error["message"].endswith(f"Request id: {response.headers['x-request-id']}")


def test_link_with_a_tampered_signature_is_403_over_the_socket(live_server: LiveServer) -> None:
    url = httpx.post(f"{live_server.url}{GENERATIONS}", json=body(**LINK), timeout=60).json()["data"][0]["url"]
    tampered = url[:-1] + ("0" if url[-1] != "0" else "1")
    response = httpx.get(tampered, timeout=30)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AccessDenied"


def test_start_up_says_it_serves_the_preview_engine(live_server: LiveServer) -> None:
    log = live_server.log.read_text()
    assert MODEL in log
    assert "PREVIEW" in log
    assert "--no-auth" in log  # the warning


# --- streaming, read raw ------------------------------------------------------------------------


def test_stream_raw_sse_over_the_socket(live_server: LiveServer) -> None:
    status, headers, chunks = post_raw(live_server, GENERATIONS, body(**LINK, stream=True, n=3, seed=21))
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    text = b"".join(chunks).decode("utf-8")
    events = sse_events(text)
    kinds = [event.event for event in events]
    assert kinds == ["image_generation.partial_succeeded"] * 3 + ["image_generation.completed", None]
    assert events[-1] == SSEEvent(None, "[DONE]")
    # each image is its own chunk on the wire: sent when stored, not batched at the end
    assert sum(b"partial_succeeded" in chunk for chunk in chunks) == 3
    assert all(chunk.count(b"partial_succeeded") <= 2 for chunk in chunks)  # "event:" line + "type" field
    created = set()
    for index, event in enumerate(events[:3]):
        data = json.loads(event.data)
        assert data["type"] == "image_generation.partial_succeeded"
        assert data["image_index"] == index
        assert data["model"] == MODEL
        assert data["size"] == "1024x1024"
        created.add(data["created"])
        fetched = httpx.get(data["url"], timeout=30)
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/jpeg"
    completed = json.loads(events[3].data)
    assert completed["type"] == "image_generation.completed"
    assert completed["model"] == MODEL
    created.add(completed["created"])
    assert len(created) == 1
    assert completed["usage"] == {
        "generated_images": 3,
        "output_tokens": 3 * 4096,
        "total_tokens": 3 * 4096,
        "input_images": 0,
    }


def test_stream_with_b64_json_over_the_socket(live_server: LiveServer) -> None:
    status, _, chunks = post_raw(
        live_server, OPENAI_GENERATIONS, body(size="1K", stream=True, response_format="b64_json")
    )
    assert status == 200
    events = sse_events(b"".join(chunks).decode())
    data = json.loads(events[0].data)
    assert "url" not in data
    assert Image.open(io.BytesIO(base64.b64decode(data["b64_json"]))).size == (1024, 1024)


def test_stream_validation_error_is_plain_json(live_server: LiveServer) -> None:
    status, headers, chunks = post_raw(live_server, GENERATIONS, body(**LINK, stream=True, seed="1"))
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    error = json.loads(b"".join(chunks))["error"]
    assert (error["code"], error["param"]) == ("InvalidParameter", "seed")
    assert error["message"].endswith(f"Request id: {headers['x-request-id']}")


# --- traversal with raw request lines -----------------------------------------------------------

RAW_TARGETS = [
    "/files/../secret.key",
    "/files/../../secret.key",
    "/files/..%2Fsecret.key",
    "/files/%2e%2e/secret.key",
    "/files/%2E%2E%2Fsecret.key",
    "/files/..\\secret.key",
    "/files/./../secret.key",
    "/files/..",
    "/files/../images/",
    "/files//etc/passwd",
    "/../secret.key",
    "/files/secret.key?expires=9999999999&signature=" + "0" * 64,
]


@pytest.mark.parametrize("target", RAW_TARGETS)
def test_raw_traversal_never_serves_the_secret(live_server: LiveServer, target: str) -> None:
    secret = (live_server.data_dir / "secret.key").read_bytes()
    status, _, content = get_raw(live_server, target)
    assert status in (400, 403, 404), status
    assert secret not in content


# --- the command line ---------------------------------------------------------------------------


def seedream(*args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("seedream")
    argv = [str(command)] if command.exists() else [sys.executable, "-m", "seedream_server.cli"]
    env = {"PATH": str(Path(sys.executable).parent), "COLUMNS": "200", "LANG": "C.UTF-8"}
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_seedream_help_lists_the_commands() -> None:
    result = seedream("--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "models"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.M), command


def test_seedream_version() -> None:
    from seedream_server import __version__

    result = seedream("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_seedream_serve_help_lists_every_setting() -> None:
    from seedream_server.config import SETTINGS

    result = seedream("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--config" in text
    for setting in SETTINGS:
        flag = setting.flag or "--" + setting.name.replace("_", "-")
        assert flag.replace("/", " / ") in text or flag in text, flag
        assert " ".join(setting.help.split()) in text, setting.name
        assert f"SEEDREAM_{setting.name.upper()}" in text, setting.name


def test_seedream_models_prints_the_default_model() -> None:
    result = seedream("models")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["id"] == MODEL
    assert lines[0]["engine"] == "preview"
    assert "seedream-4.0" in lines[0]["aliases"]


def test_seedream_serve_refuses_a_bad_option() -> None:
    result = seedream("serve", "--port", "not-a-number")
    assert result.returncode == 2
    assert "port" in result.stderr.lower()


def test_public_url_flag_and_env_settings(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, "--no-auth", "--public-url", "https://images.example.com/", env={"SEEDREAM_MAX_PROMPT_CHARS": "20"}
    )
    try:
        response = httpx.post(f"{server.url}{GENERATIONS}", json=body(**LINK, prompt="a boat"), timeout=60)
        url = response.json()["data"][0]["url"]
        assert url.startswith("https://images.example.com/files/")
        parts = urlsplit(url)
        fetched = httpx.get(f"{server.url}{parts.path}?{parts.query}", timeout=30)  # as a proxy would forward it
        assert fetched.status_code == 200
        response = httpx.post(f"{server.url}{GENERATIONS}", json=body(**LINK, prompt="x" * 21), timeout=30)
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "prompt"
    finally:
        stop_server(server)
    assert server.process.returncode is not None


def test_sse_lines_end_with_lf_as_in_the_spec(live_server: LiveServer) -> None:
    status, _, chunks = post_raw(live_server, GENERATIONS, body(**LINK, stream=True))
    assert status == 200
    text = b"".join(chunks)
    assert b"\r" not in text
    assert text.endswith(b"\n\ndata: [DONE]\n\n")
