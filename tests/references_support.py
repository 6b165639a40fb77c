"""Shared helpers for the ``test_references_*`` modules: policies, sample images, a refusal helper, a
table-driven resolver, and image builders for hostile inputs (scan floods, headers larger than their data)."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import struct
import zlib
from collections.abc import Sequence

import httpx
import pytest
from PIL import Image

from refserver import PNG_SIGNATURE, encode, solid
from seedream_server.errors import InvalidParameter
from seedream_server.references import IPAddress, ReferencePolicy, load_references, parse_allowlist

LOCAL = ReferencePolicy(allowlist=parse_allowlist("127.0.0.1/32"))
PNG = encode(solid((64, 48)), "png")
JPEG = encode(solid((64, 48)), "jpeg")


async def refused(value: str | Sequence[str | bytes], policy: ReferencePolicy = LOCAL, **kwargs: object) -> str:
    """Load and expect a 400 on ``image``; return its message."""
    with pytest.raises(InvalidParameter) as info:
        await asyncio.wait_for(load_references(value, policy, **kwargs), 20)  # type: ignore[arg-type]
    assert info.value.param == "image"
    assert info.value.status == 400
    return info.value.message


def no_client() -> httpx.AsyncClient:
    raise AssertionError("no HTTP client may be built for this input")


class FakeDNS:
    """A resolver answering from a table (the real one calls loop.getaddrinfo once)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[IPAddress]:
        self.calls.append((host, port))
        return [ipaddress.ip_address(a) for a in self.table[host]]


def scan_flood_jpeg(side: int = 6000, copies: int = 3000) -> bytes:
    """A valid progressive ``side`` x ``side`` JPEG of little content with ``copies`` extra copies of its
    last (small, refining) scan inserted before EOI: each copy makes a decoder pass over the image."""
    data = encode(Image.new("RGB", (side, side), (90, 140, 200)), "jpeg", progressive=True, quality=80)
    scan = data[data.rfind(b"\xff\xda") : -2]
    return data[:-2] + scan * copies + b"\xff\xd9"


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG) with its frame header claiming ``width`` x ``height``."""
    sof = next(i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    patched = bytearray(data)
    struct.pack_into(">HH", patched, sof + 5, height, width)
    return bytes(patched)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with_rows(width: int, height: int, rows: int) -> bytes:
    """An RGB PNG whose header says ``width`` x ``height`` but whose (complete) zlib stream holds ``rows``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = (b"\x00" + bytes(range(256)) * (width * 3 // 256) + bytes(width * 3 % 256)) * rows
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def noise(size: tuple[int, int], fmt: str, **params: object) -> bytes:
    return encode(Image.effect_noise(size, 64).convert("RGB"), fmt, **params)


def decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size
