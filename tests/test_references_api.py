"""References through the whole server: the Ark SDK sending 3 references (data URIs and an allowlisted
URL), presets taking the first reference's ratio, the URL guard refusing loopback without an allowlist,
and errors naming the index."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime._exceptions import ArkBadRequestError

from conftest import LiveServer, start_server, stop_server
from refserver import ImageServer, data_uri, encode, solid

MODEL = "doubao-seedream-4-0-250828"


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.files["wide.png"] = (encode(solid((320, 180), (20, 120, 220)), "PNG"), "image/png")
        server.files["tall.jpg"] = (encode(solid((90, 160), (220, 120, 20)), "JPEG"), "text/plain")
        yield server


@pytest.fixture(scope="module")
def allowlisted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("refs"), "--no-auth", "--reference-allowlist", "127.0.0.1/32")
    yield server
    stop_server(server)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))), dtype=np.int16)


def test_ark_sdk_three_references(allowlisted: LiveServer, images: ImageServer) -> None:
    client = Ark(base_url=f"{allowlisted.url}/api/v3", api_key="test")
    refs = [
        images.url("/img/wide.png"),  # 16:9 first: the 2K preset follows it
        data_uri(encode(solid((64, 64), (250, 250, 250)), "PNG"), "png"),
        images.url("/img/tall.jpg"),  # served as text/plain: sniffed as JPEG anyway
    ]
    resp = client.images.generate(
        model=MODEL, prompt="merge these", image=refs, size="2K", response_format="b64_json", seed=4, watermark=False
    )
    assert resp.data[0].size == "2848x1600"
    first = pixels(resp.data[0].b64_json)
    # change only the second reference: the output changes
    refs[1] = data_uri(encode(solid((64, 64), (5, 5, 5)), "PNG"), "png")
    other = client.images.generate(
        model=MODEL, prompt="merge these", image=refs, size="2K", response_format="b64_json", seed=4, watermark=False
    )
    assert np.abs(first - pixels(other.data[0].b64_json)).mean() > 1.0


def test_prompt_ratio_beats_reference_ratio(allowlisted: LiveServer, images: ImageServer) -> None:
    client = Ark(base_url=f"{allowlisted.url}/api/v3", api_key="test")
    resp = client.images.generate(
        model=MODEL, prompt="竖屏海报", image=images.url("/img/wide.png"), size="1K", response_format="b64_json"
    )
    assert resp.data[0].size == "736x1312"


def test_loopback_refused_without_allowlist(live_server: LiveServer, images: ImageServer) -> None:
    client = Ark(base_url=f"{live_server.url}/api/v3", api_key="test", max_retries=0)
    before = len(images.paths)
    with pytest.raises(ArkBadRequestError) as info:
        client.images.generate(
            model=MODEL,
            prompt="x",
            image=[data_uri(encode(solid((64, 64)), "PNG"), "png"), images.url("/img/wide.png")],
        )
    assert info.value.code == "InvalidParameter"
    assert info.value.param == "image"
    assert "image[1]" in str(info.value)
    assert len(images.paths) == before  # no connection was made


def test_too_many_references_for_group(live_server: LiveServer, tmp_path: Path) -> None:
    client = Ark(base_url=f"{live_server.url}/api/v3", api_key="test", max_retries=0)
    ref = data_uri(encode(solid((32, 32)), "PNG"), "png")
    with pytest.raises(ArkBadRequestError) as info:
        client.images.generate(model=MODEL, prompt="x", image=[ref] * 15)
    assert info.value.param == "image"
    assert "14" in str(info.value)
