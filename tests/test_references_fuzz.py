"""A hypothesis fuzz of the reference checks and decoder: random bytes and mutated valid images (truncated,
bit-flipped, spliced) through sniffing, header and structure checks and decoding raise nothing but
:class:`ReferenceRejected` (a 400 at the edge), and whatever decodes fits the pixel budget."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from refserver import encode
from seedream_server.errors import InvalidParameter
from seedream_server.references import (
    ReferencePolicy,
    ReferenceRejected,
    decode_reference,
    inspect_image,
    load_references,
)

POLICY = ReferencePolicy(max_pixels=4_000_000)  # keeps every decode the fuzz reaches small
BUDGET = 250_000
FUZZ = settings(
    max_examples=200, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b"BM"]


@cache
def seeds() -> list[bytes]:
    photo = Image.effect_noise((48, 40), 48).convert("RGB")
    return [
        encode(photo, "png"),
        encode(photo.convert("P"), "png"),
        encode(photo, "jpeg"),
        encode(photo, "jpeg", progressive=True),
        encode(photo, "webp"),
        encode(photo, "webp", lossless=True),
        encode(photo.convert("P"), "gif"),
        encode(photo, "bmp"),
        encode(photo, "tiff"),
    ]


def check(data: bytes) -> None:
    """The pipeline a reference goes through; only a refusal may come out of it."""
    try:
        fmt, width, height = inspect_image(data, None, POLICY)
        image = decode_reference(data, fmt, BUDGET)
    except ReferenceRejected:
        return
    assert width * height <= POLICY.max_pixels
    assert image.mode == "RGB" and image.width * image.height <= BUDGET


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "truncate", "overwrite", "splice", "insert"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[max(at, 1) :]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "splice":  # repeat a slice: duplicated segments, scans, chunks
            end = min(len(data), at + draw(st.integers(1, 512)))
            data[at:at] = data[at:end] * draw(st.integers(1, 20))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        if not data:
            break
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_images_are_decoded_or_refused(data: bytes) -> None:
    check(data)


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=4096))
def test_random_bytes_behind_a_magic_number_are_refused(magic: bytes, tail: bytes) -> None:
    check(magic + tail)


@pytest.mark.parametrize("index", range(9))
def test_every_seed_decodes(index: int) -> None:
    data = seeds()[index]
    fmt, width, height = inspect_image(data, None, POLICY)
    assert (width, height) == (48, 40)
    assert decode_reference(data, fmt, BUDGET).size == (48, 40)


async def test_a_refusal_reaches_the_client_as_a_400() -> None:
    with pytest.raises(InvalidParameter, match=r"^image\[0\]: "):
        await load_references([seeds()[0][:200]], POLICY)
