"""The openai engine over real HTTP on loopback: this server (the gateway) relays to a second
``seedream serve`` (preview engine, speaking the OpenAI images API at ``/v1``), driven with the openai SDK
(and the Ark SDK for a streamed group, which the gateway plans and sends one upstream call per image).

``oai-relay`` re-hosts; ``oai-direct`` passes the upstream's answer through. The preview upstream is
deterministic, so an image passed through has the very pixels of the same call sent straight upstream:
that proves the prompt, seed, size and references each call carried.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime.types.images.images import SequentialImageGenerationOptions

from conftest import LiveServer, free_port, start_server, stop_server
from refserver import ImageServer, data_uri, encode, solid
from seedream_server.planner.plan import plan_group
from seedream_server.provenance import read_provenance
from support import MODEL, PROMPT
from upstream_support import GROUP_OF_4, b64_pixels, gateway

PNG_A = encode(solid((64, 64), (250, 250, 250)), "PNG")
JPEG_B = encode(solid((80, 60), (10, 200, 10)), "JPEG")
PNG_C = encode(solid((320, 180), (20, 120, 220)), "PNG")


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.files["c.png"] = (PNG_C, "image/png")
        yield server


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("upstream"), "--no-auth")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: LiveServer) -> Iterator[LiveServer]:
    v1 = f"{upstream.url}/v1"
    dead = f"http://127.0.0.1:{free_port()}/v1"  # refuses connections
    models: list[dict[str, Any]] = [
        {"name": "oai-relay", "engine": "openai", "base_urls": [v1], "upstream_model": MODEL, "max_references": 10},
        {"name": "oai-direct", "engine": "openai", "base_urls": [v1], "upstream_model": MODEL, "rehost": False},
        {"name": "oai-replicas", "engine": "openai", "base_urls": [dead, v1], "upstream_model": MODEL},
    ]
    # the gateway fetches URL references for this engine: its allowlist admits the image server
    server = gateway(tmp_path_factory.mktemp("gateway"), models, "--reference-allowlist", "127.0.0.1/32")
    yield server
    stop_server(server)


@pytest.fixture
def via(gw: LiveServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="test", timeout=120, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def direct(upstream: LiveServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{upstream.url}/v1", api_key="test", timeout=120, max_retries=0)
    yield client
    client.close()


def b64_of(response: Any, index: int = 0) -> str:
    assert response.data is not None
    b64 = response.data[index].b64_json
    assert isinstance(b64, str)
    return b64


def test_text_to_image_is_rehosted_with_our_provenance(via: openai.OpenAI, direct: openai.OpenAI) -> None:
    extra = {"seed": 5, "watermark": False}
    relayed = via.images.generate(
        model="oai-relay", prompt=PROMPT, size="1024x1024", response_format="b64_json", extra_body=extra
    )
    label = read_provenance(base64.b64decode(b64_of(relayed)))
    assert label["engine"] == "openai" and label["model"] == "oai-relay"
    straight = direct.images.generate(
        model=MODEL, prompt=PROMPT, size="1024x1024", response_format="b64_json", extra_body=extra
    )
    # the same seed reached the upstream: the same image, only JPEG noise apart
    assert np.abs(b64_pixels(b64_of(relayed)) - b64_pixels(b64_of(straight))).mean() < 2.0


def test_url_is_ours_when_rehosting_and_the_upstreams_when_not(
    via: openai.OpenAI, gw: LiveServer, upstream: LiveServer
) -> None:
    ours = via.images.generate(model="oai-relay", prompt=PROMPT, size="1024x1024", response_format="url")
    assert ours.data is not None and ours.data[0].url is not None
    assert ours.data[0].url.startswith(f"{gw.url}/")
    assert read_provenance(httpx.get(ours.data[0].url, timeout=30).content)["engine"] == "openai"
    theirs = via.images.generate(model="oai-direct", prompt=PROMPT, size="1024x1024", response_format="url")
    assert theirs.data is not None and theirs.data[0].url is not None
    assert theirs.data[0].url.startswith(f"{upstream.url}/")


def test_three_uploaded_references_go_to_upstream_edits(via: openai.OpenAI, direct: openai.OpenAI) -> None:
    files = [("a.png", PNG_A, "image/png"), ("b.jpg", JPEG_B, "image/jpeg"), ("c.png", PNG_C, "image/png")]
    args: dict[str, Any] = {"prompt": "merge these", "size": "1024x1024", "response_format": "b64_json"}
    extra = {"seed": 8, "watermark": False}
    relayed = via.images.edit(model="oai-direct", image=files, **args, extra_body=extra)
    straight = direct.images.edit(model=MODEL, image=files, **args, extra_body=extra)
    assert np.array_equal(b64_pixels(b64_of(relayed)), b64_pixels(b64_of(straight)))
    fewer = direct.images.edit(model=MODEL, image=files[:2], **args, extra_body=extra)
    assert np.abs(b64_pixels(b64_of(fewer)) - b64_pixels(b64_of(relayed))).mean() > 1.0


def test_a_url_reference_is_fetched_here_and_uploaded(
    gw: LiveServer, direct: openai.OpenAI, images: ImageServer
) -> None:
    body = {
        "model": "oai-direct",
        "prompt": "merge these",
        "image": [data_uri(PNG_A, "png"), data_uri(JPEG_B, "jpeg"), images.url("/img/c.png")],
        "size": "1024x1024",
        "response_format": "b64_json",
        "seed": 9,
        "watermark": False,
    }
    relayed = httpx.post(f"{gw.url}/api/v3/images/generations", json=body, timeout=120)
    assert relayed.status_code == 200, relayed.text
    files = [("a.png", PNG_A, "image/png"), ("b.jpg", JPEG_B, "image/jpeg"), ("c.png", PNG_C, "image/png")]
    straight = direct.images.edit(
        model=MODEL,
        image=files,
        prompt="merge these",
        size="1024x1024",
        response_format="b64_json",
        extra_body={"seed": 9, "watermark": False},
    )
    assert np.array_equal(b64_pixels(relayed.json()["data"][0]["b64_json"]), b64_pixels(b64_of(straight)))


def test_streamed_group_of_four_planned_here(gw: LiveServer) -> None:
    ark = Ark(base_url=f"{gw.url}/api/v3", api_key="test", timeout=120, max_retries=0)
    stream = ark.images.generate(
        model="oai-relay",
        prompt=GROUP_OF_4,
        size="1K",
        response_format="url",
        sequential_image_generation="auto",
        sequential_image_generation_options=SequentialImageGenerationOptions(max_images=4),
        stream=True,
    )
    events = list(stream)
    ark.close()
    assert [e.type for e in events] == ["image_generation.partial_succeeded"] * 4 + ["image_generation.completed"]
    assert [e.image_index for e in events[:4]] == [0, 1, 2, 3]
    for event in events[:4]:
        assert event.url.startswith(f"{gw.url}/")
        assert read_provenance(httpx.get(event.url, timeout=30).content)["engine"] == "openai"


def test_a_group_feeds_earlier_outputs_forward(gw: LiveServer, direct: openai.OpenAI) -> None:
    body = {
        "model": "oai-direct",
        "prompt": GROUP_OF_4,
        "size": "1024x1024",
        "response_format": "b64_json",
        "sequential_image_generation": "auto",
        "sequential_image_generation_options": {"max_images": 4},
        "seed": 20,
        "watermark": False,
    }
    group = httpx.post(f"{gw.url}/api/v3/images/generations", json=body, timeout=120).json()["data"]
    assert len(group) == 4
    prompts = plan_group(GROUP_OF_4, 4).prompts  # the gateway's planner, the same rules
    first = base64.b64decode(group[0]["b64_json"])
    # image 1 is an edit of image 0 with its own prompt and seed
    second = direct.images.edit(
        model=MODEL,
        image=[("0.jpeg", first, "image/jpeg")],
        prompt=prompts[1],
        size="1024x1024",
        response_format="b64_json",
        extra_body={"seed": 21, "watermark": False},
    )
    assert np.array_equal(b64_pixels(group[1]["b64_json"]), b64_pixels(b64_of(second)))


def test_a_replica_that_refuses_connections_is_routed_around(gw: LiveServer) -> None:
    for seed in range(3):
        body = {"model": "oai-replicas", "prompt": PROMPT, "size": "1024x1024", "seed": seed}
        answer = httpx.post(f"{gw.url}/api/v3/images/generations", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
    assert httpx.get(f"{gw.url}/readyz", timeout=30).json()["unready"] == []


def test_models_list_the_engine_kind(gw: LiveServer) -> None:
    models = httpx.get(f"{gw.url}/v1/models", timeout=30).json()["data"]
    assert {m["id"]: m["engine"] for m in models} == {
        "oai-relay": "openai",
        "oai-direct": "openai",
        "oai-replicas": "openai",
    }
