"""The package's entry points (references/load.py): order, counts, the failing index, uploads as bytes,
and references kept compressed by :func:`fetch_references`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from references_support import JPEG, LOCAL, PNG, no_client, refused
from refserver import ImageServer, data_uri, encode, solid
from seedream_server.errors import InvalidParameter
from seedream_server.references import FetchedReference, ReferencePolicy, fetch_references, load_references


async def test_jpg_is_an_alias_of_jpeg_and_a_list_keeps_order() -> None:
    refs = await load_references([data_uri(JPEG, "jpg"), data_uri(PNG, "png")], ReferencePolicy())
    assert [(r.index, r.format) for r in refs] == [(0, "jpeg"), (1, "png")]


async def test_error_names_the_failing_index() -> None:
    value = [data_uri(PNG, "png"), data_uri(JPEG, "jpeg"), data_uri(PNG, "jpeg")]
    assert (await refused(value)).startswith("image[2]: declared format 'jpeg'")


async def test_fourteen_references_load() -> None:
    uri = data_uri(PNG, "png")
    assert len(await load_references([uri] * 14, ReferencePolicy())) == 14


async def test_none_and_empty_list_mean_no_references() -> None:
    assert await load_references(None, ReferencePolicy()) == []
    assert await load_references([], ReferencePolicy()) == []


@pytest.fixture(scope="module")
def srv() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.files["wide.png"] = (encode(solid((320, 180)), "png"), "image/png")
        yield server


async def test_fetch_references_keeps_them_compressed(srv: ImageServer) -> None:
    upload = encode(solid((90, 160)), "webp")
    items: list[str | bytes] = [data_uri(JPEG, "jpeg"), srv.url("/img/wide.png"), upload]
    refs = await fetch_references(items, LOCAL)
    assert refs == [
        FetchedReference(0, JPEG, "jpeg", 64, 48),
        FetchedReference(1, srv.files["wide.png"][0], "png", 320, 180),
        FetchedReference(2, upload, "webp", 90, 160),
    ]


async def test_uploads_are_bytes_without_a_base64_round_trip() -> None:
    refs = await load_references([PNG, data_uri(PNG, "png")], ReferencePolicy(), client_factory=no_client)
    assert [(r.source, r.format, r.image.size) for r in refs] == [
        ("upload", "png", (64, 48)),
        ("data", "png", (64, 48)),
    ]
    assert await fetch_references([], ReferencePolicy()) == []


@pytest.mark.parametrize(
    ("upload", "expected"),
    [
        (b"", "image[0]: empty image data"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image[0]: unsupported image format 'svg'"),
        (PNG[: len(PNG) // 2], "image[0]: png image data ends after"),
    ],
)
async def test_uploads_are_checked_like_data_uris(upload: bytes, expected: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        await load_references([upload], ReferencePolicy())
    assert info.value.param == "image"
    assert info.value.message.startswith(expected)
