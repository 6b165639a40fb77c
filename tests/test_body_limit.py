"""Request bodies past ``max_body_bytes`` are refused with a 400, by Content-Length or while streaming."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace

from seedream_server.config import Settings
from seedream_server.http import create_app
from support import GENERATIONS, assert_error, body, running


async def chunks(data: bytes, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_bodies_over_the_limit_are_refused(settings: Settings) -> None:
    app = create_app(replace(settings, max_body_bytes=4096))
    large = json.dumps(body(prompt="x" * 5000)).encode()
    multipart = (
        b'--b\r\nContent-Disposition: form-data; name="image[]"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + b"\x89PNG" + bytes(6000) + b"\r\n--b--\r\n"
    )
    async with running(app) as client:
        cases: list[tuple[str, bytes | AsyncIterator[bytes], dict[str, str]]] = [
            (GENERATIONS, large, {"content-type": "application/json"}),
            (GENERATIONS, chunks(large), {"content-type": "application/json"}),
            ("/v1/images/edits", chunks(multipart), {"content-type": "multipart/form-data; boundary=b"}),
        ]
        for path, content, headers in cases:
            r = await client.post(path, content=content, headers=headers)
            error = assert_error(r, 400, "InvalidParameter")
            assert "4096-byte limit" in error["message"], error
        small = await client.post(GENERATIONS, json=body(prompt="ok"))
        assert small.status_code == 200
