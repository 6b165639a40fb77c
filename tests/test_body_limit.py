"""Request bodies past ``max_body_bytes`` are refused with a 400, by Content-Length or while streaming."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx

from seedream_server.app import create_app
from seedream_server.config import Settings

MODEL = "doubao-seedream-4-0-250828"


async def chunks(data: bytes, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_bodies_over_the_limit_are_refused(settings: Settings) -> None:
    app = create_app(replace(settings, max_body_bytes=4096))
    body = json.dumps({"model": MODEL, "prompt": "x" * 5000, "size": "1280x720"}).encode()
    multipart = (
        b'--b\r\nContent-Disposition: form-data; name="image[]"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + b"\x89PNG" + bytes(6000) + b"\r\n--b--\r\n"
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            cases = [
                ("/api/v3/images/generations", body, {"content-type": "application/json"}),
                ("/api/v3/images/generations", chunks(body), {"content-type": "application/json"}),
                ("/v1/images/edits", chunks(multipart), {"content-type": "multipart/form-data; boundary=b"}),
            ]
            for path, content, headers in cases:
                r = await client.post(path, content=content, headers=headers)
                assert r.status_code == 400, r.text
                error = r.json()["error"]
                assert error["code"] == "InvalidParameter"
                assert "4096-byte limit" in error["message"], error
            small = await client.post(
                "/api/v3/images/generations", json={"model": MODEL, "prompt": "ok", "size": "1280x720"}
            )
            assert small.status_code == 200
