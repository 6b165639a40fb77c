"""Benchmark reference-image loading (SPEC §4): decode + check cost, and concurrent URL fetches.

Run: ``.venv/bin/python bench/bench_references.py`` (about half a minute, loopback traffic only).

1. Decode and check one reference given as a data URI, at 2K (2048x2048) and 6K (6000x6000, 36 MP,
   just under the pixel limit), as JPEG and PNG: base64 + sniff + header check + full decode to RGB.
2. The header-only refusal of a 50,000 x 50,000 PNG bomb.
3. Wall time of fetching 1 vs 10 references from a local server that delays each response, and the
   ratio (1.0 would be perfect concurrency; 10 would be sequential).
4. Hostile JPEGs: the refusal of a 6000x6000 progressive JPEG flooded with copies of one scan (what
   decoding a lighter flood would have cost instead), and the decoder pool's time budget stopping one.
5. Downscaled decoding in the pool: a 6000x6000 JPEG photo in full vs to a 1 MP budget (DCT scaling).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import statistics
import struct
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from seedream_server.errors import InvalidParameter
from seedream_server.references import (
    FetchedReference,
    ReferenceDecoder,
    ReferencePolicy,
    decode_reference,
    fetch_references,
    load_references,
    parse_allowlist,
)

DELAY_S = 0.3
POLICY = ReferencePolicy(allowlist=parse_allowlist("127.0.0.1/32"))


def photo_like(side: int) -> Image.Image:
    """A smooth gradient with texture: compresses like a photo, not like a flat colour."""
    small = Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize((side // 8, side // 8)),
            Image.radial_gradient("L").resize((side // 8, side // 8)),
            Image.effect_noise((side // 8, side // 8), 40).convert("L"),
        ],
    )
    return small.resize((side, side), Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
    return buffer.getvalue()


def data_uri(data: bytes, fmt: str) -> str:
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"


def png_bomb(side: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(bytes(1 + side // 8) * 16)  # header-only refusal: the rows never matter
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def timed(make: Callable[[], Awaitable[object]], runs: int) -> float:
    """Median seconds of ``runs`` awaits (after one warm-up)."""
    await make()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await make()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


class _Slow(BaseHTTPRequestHandler):
    body = b""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(DELAY_S)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the default backlog of 5 would hold concurrent connects back a SYN retry


def graphic(side: int) -> Image.Image:
    """Gradients without noise: a PNG that stays under the byte cap even at 36 MP."""
    gradient = Image.linear_gradient("L").resize((side, side))
    radial = Image.radial_gradient("L").resize((side, side))
    return Image.merge("RGB", [gradient, radial, gradient.transpose(Image.Transpose.ROTATE_90)])


async def bench_decode() -> None:
    print("1. decode + check one reference from a data URI (median)")
    print(f"   {'size':>11} {'format':>6} {'content':>8} {'bytes':>10} {'ms/ref':>8} {'MP/s':>7}")
    for side, runs in ((2048, 7), (6000, 3)):
        for fmt, content in (("JPEG", "photo"), ("PNG", "photo"), ("PNG", "graphic")):
            data = encode(photo_like(side) if content == "photo" else graphic(side), fmt)
            label = f"   {f'{side}x{side}':>11} {fmt.lower():>6} {content:>8} {len(data):>10}"
            if len(data) > POLICY.max_bytes:
                print(f"{label}   over the {POLICY.max_bytes}-byte cap: refused, not timed")
                continue
            uri = data_uri(data, fmt.lower())
            seconds = await timed(functools.partial(load_references, uri, POLICY), runs)
            print(f"{label} {seconds * 1000:>8.1f} {side * side / seconds / 1e6:>7.1f}")


async def bench_bomb() -> None:
    uri = data_uri(png_bomb(50_000), "png")

    async def refuse() -> None:
        try:
            await load_references(uri, POLICY)
        except InvalidParameter:
            return
        raise AssertionError("the bomb was accepted")

    seconds = await timed(refuse, 20)
    print(f"2. refuse a 50000x50000 PNG bomb ({len(uri)} chars) from its header: {seconds * 1000:.2f} ms")


async def bench_fetch() -> None:
    _Slow.body = encode(photo_like(512), "JPEG")
    server = _Server(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ref.jpg"
        one = await timed(lambda: load_references(url, POLICY), 3)
        ten = await timed(lambda: load_references([url] * 10, POLICY), 3)
    finally:
        server.shutdown()
        server.server_close()
    print(f"3. fetch references delayed {DELAY_S * 1000:.0f} ms each (512x512 JPEG, median of 3)")
    print(f"   1 reference:   {one * 1000:7.1f} ms")
    print(f"   10 references: {ten * 1000:7.1f} ms   ratio {ten / one:.2f} (sequential would be ~10)")


def scan_flood(copies: int) -> bytes:
    """A 6000x6000 progressive JPEG of one colour with ``copies`` extra copies of its last scan."""
    data = encode_with(Image.new("RGB", (6000, 6000), (90, 140, 200)), "JPEG", progressive=True)
    scan = data[data.rfind(b"\xff\xda") : -2]
    return data[:-2] + scan * copies + b"\xff\xd9"


def encode_with(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


async def refusal_seconds(items: list[str | bytes]) -> float:
    started = time.perf_counter()
    try:
        await fetch_references(items, POLICY)
    except InvalidParameter:
        return time.perf_counter() - started
    raise AssertionError("the hostile reference was accepted")


async def bench_hostile() -> None:
    flood = scan_flood(3000)
    print(f"4. hostile JPEGs ({len(flood)}-byte 6000x6000 progressive JPEG with 3000 extra scans)")
    seconds = await refusal_seconds([flood] * 14)
    print(f"   refuse 14 of them from their scan count:        {seconds * 1000:8.1f} ms")
    light = scan_flood(90)  # under the scan limit: what each scan costs a decoder
    started = time.perf_counter()
    decode_reference(light, "jpeg", None)
    cost = time.perf_counter() - started
    print(f"   decoding one with 90 extra scans instead:       {cost * 1000:8.1f} ms (in-process)")
    decoder = ReferenceDecoder(workers=1, timeout_s=1.0)
    try:
        await decoder.decode([FetchedReference(0, encode_with(Image.new("RGB", (64, 64)), "PNG"), "png", 64, 64)], None)
        started = time.perf_counter()
        with contextlib.suppress(InvalidParameter):
            await decoder.decode([FetchedReference(0, flood, "jpeg", 6000, 6000)], None)
        print(f"   the 3000-scan one in the pool, 1 s budget:      {(time.perf_counter() - started) * 1000:8.1f} ms")
    finally:
        await decoder.aclose()


async def bench_downscale() -> None:
    data = encode(photo_like(6000), "JPEG")
    ref = FetchedReference(0, data, "jpeg", 6000, 6000)
    decoder = ReferenceDecoder(workers=2, timeout_s=60)
    print(f"5. decode a 6000x6000 JPEG photo ({len(data)} bytes) in the pool (median of 3)")
    try:
        for budget in (None, 1_000_000):
            seconds = await timed(lambda budget=budget: decoder.decode([ref], budget), 3)  # type: ignore[misc]
            [image] = await decoder.decode([ref], budget)
            print(f"   budget {budget or 'none':>9}: {seconds * 1000:8.1f} ms -> {image.width}x{image.height}")
    finally:
        await decoder.aclose()


async def main() -> None:
    started = time.perf_counter()
    await bench_decode()
    await bench_bomb()
    await bench_fetch()
    await bench_hostile()
    await bench_downscale()
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
