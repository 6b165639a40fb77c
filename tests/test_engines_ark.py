"""The ark engine over real HTTP on loopback: this server (the gateway) relays to a second ``seedream serve``
(preview engine, speaking the Ark API) and is driven with the Ark SDK.

``ark-relay`` re-hosts (our storage, our provenance); ``ark-direct`` passes upstream links through. The
preview upstream is deterministic, so an image relayed without re-hosting has the very pixels of the same
request sent straight upstream, which proves the fields (and references) reached it as sent.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime.types.images.images import SequentialImageGenerationOptions

from conftest import LiveServer, start_server, stop_server
from refserver import ImageServer, data_uri, encode, solid
from seedream_server.accounts import AccountStore
from seedream_server.engines.base import ImageJob, ImageTask
from seedream_server.engines.upstream import ArkEngine
from seedream_server.provenance import read_provenance
from support import MODEL, PROMPT, assert_error, wait_until
from upstream_support import GROUP_OF_4, b64_pixels, gateway

UPSTREAM_PROMPT_LIMIT = 200  # the upstream's max_prompt_chars; the gateway takes 4000


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.files["ref.png"] = (encode(solid((320, 180), (20, 120, 220)), "PNG"), "image/png")
        yield server


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    limit = str(UPSTREAM_PROMPT_LIMIT)
    server = start_server(
        tmp_path_factory.mktemp("upstream"),
        "--no-auth",
        "--reference-allowlist",
        "127.0.0.1/32",
        "--max-prompt-chars",
        limit,
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: LiveServer) -> Iterator[LiveServer]:
    base = f"{upstream.url}/api/v3"
    models: list[dict[str, Any]] = [
        {"name": "ark-relay", "engine": "ark", "base_url": base, "upstream_model": MODEL, "timeout_s": 60},
        {"name": "ark-direct", "engine": "ark", "base_url": base, "upstream_model": MODEL, "rehost": False},
    ]
    server = gateway(tmp_path_factory.mktemp("gateway"), models)
    yield server
    stop_server(server)


@pytest.fixture
def via(gw: LiveServer) -> Iterator[Ark]:
    client = Ark(base_url=f"{gw.url}/api/v3", api_key="test", timeout=120, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def direct(upstream: LiveServer) -> Iterator[Ark]:
    client = Ark(base_url=f"{upstream.url}/api/v3", api_key="test", timeout=120, max_retries=0)
    yield client
    client.close()


def b64_of(response: Any) -> str:
    b64 = response.data[0].b64_json
    assert isinstance(b64, str)
    return b64


# --- text to image, b64 and url, rehost on and off ------------------------------------------------


def test_text_to_image_b64_is_rehosted_with_our_provenance(via: Ark, direct: Ark) -> None:
    args: dict[str, Any] = {"prompt": PROMPT, "size": "2K", "seed": 5, "watermark": False}
    relayed = via.images.generate(model="ark-relay", response_format="b64_json", **args)
    assert relayed.model == "ark-relay"
    assert relayed.data[0].size == "2048x2048"
    assert relayed.usage.generated_images == 1 and relayed.usage.output_tokens == 2048 * 2048 // 256
    label = read_provenance(base64.b64decode(b64_of(relayed)))
    assert label["model"] == "ark-relay" and label["engine"] == "ark"
    straight = direct.images.generate(model=MODEL, response_format="b64_json", **args)
    # the same image, re-encoded here: only JPEG noise apart
    assert np.abs(b64_pixels(b64_of(relayed)) - b64_pixels(b64_of(straight))).mean() < 2.0


def test_url_rehosted_is_our_signed_link(via: Ark, gw: LiveServer) -> None:
    relayed = via.images.generate(model="ark-relay", prompt=PROMPT, size="1K", response_format="url", seed=2)
    url = relayed.data[0].url
    assert url.startswith(f"{gw.url}/")
    label = read_provenance(httpx.get(url, timeout=30).content)
    assert label["engine"] == "ark" and label["model"] == "ark-relay"


def test_rehost_off_passes_upstream_links_and_bytes_through(via: Ark, direct: Ark, upstream: LiveServer) -> None:
    linked = via.images.generate(model="ark-direct", prompt=PROMPT, size="1K", response_format="url", seed=3)
    assert linked.data[0].url.startswith(f"{upstream.url}/")  # the upstream's own link
    assert linked.data[0].size == "1024x1024"
    label = read_provenance(httpx.get(linked.data[0].url, timeout=30).content)
    assert label["engine"] == "preview"  # the upstream's image, untouched
    args: dict[str, Any] = {"prompt": PROMPT, "size": "1K", "response_format": "b64_json", "seed": 3}
    inline = via.images.generate(model="ark-direct", **args)
    straight = direct.images.generate(model=MODEL, **args)
    assert np.array_equal(b64_pixels(b64_of(inline)), b64_pixels(b64_of(straight)))


# --- references: forwarded as sent, the URL fetched by the upstream -----------------------------------


def test_three_references_reach_the_upstream_as_sent(via: Ark, direct: Ark, images: ImageServer) -> None:
    refs = [
        images.url("/img/ref.png"),  # 16:9, fetched by the upstream (its allowlist), not here
        data_uri(encode(solid((64, 64), (250, 250, 250)), "PNG"), "png"),
        data_uri(encode(solid((80, 60), (10, 200, 10)), "JPEG"), "jpeg"),
    ]
    args: dict[str, Any] = {"prompt": "merge these", "size": "2K", "response_format": "b64_json", "seed": 4}
    relayed = via.images.generate(model="ark-direct", image=refs, **args)
    straight = direct.images.generate(model=MODEL, image=refs, **args)
    assert relayed.data[0].size == straight.data[0].size == "2848x1600"  # the upstream took the first URL's ratio
    assert np.array_equal(b64_pixels(b64_of(relayed)), b64_pixels(b64_of(straight)))
    fewer = direct.images.generate(model=MODEL, image=refs[:2], **args)  # every reference counts
    assert np.abs(b64_pixels(b64_of(fewer)) - b64_pixels(b64_of(relayed))).mean() > 1.0


def test_uploads_to_edits_are_forwarded_as_data_uris(gw: LiveServer, direct: Ark) -> None:
    png, jpeg = encode(solid((64, 64), (250, 250, 250)), "PNG"), encode(solid((80, 60), (10, 200, 10)), "JPEG")
    oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="test", timeout=120, max_retries=0)
    relayed = oai.images.edit(
        model="ark-direct",
        image=[("a.png", png, "image/png"), ("b.jpg", jpeg, "image/jpeg")],
        prompt="merge these",
        size="1024x1024",
        response_format="b64_json",
        extra_body={"seed": 6},
    )
    oai.close()
    straight = direct.images.generate(
        model=MODEL,
        image=[data_uri(png, "png"), data_uri(jpeg, "jpeg")],
        prompt="merge these",
        size="1024x1024",
        response_format="b64_json",
        seed=6,
    )
    assert relayed.data is not None and isinstance(relayed.data[0].b64_json, str)
    assert np.array_equal(b64_pixels(relayed.data[0].b64_json), b64_pixels(b64_of(straight)))


# --- groups: Ark plans them; streamed image by image ----------------------------------------------------


def test_streamed_group_of_four_arrives_image_by_image(via: Ark, gw: LiveServer) -> None:
    stream = via.images.generate(
        model="ark-relay",
        prompt=GROUP_OF_4,
        size="1K",
        response_format="url",
        sequential_image_generation="auto",
        sequential_image_generation_options=SequentialImageGenerationOptions(max_images=4),
        stream=True,
    )
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds == ["image_generation.partial_succeeded"] * 4 + ["image_generation.completed"]
    assert [event.image_index for event in events[:4]] == [0, 1, 2, 3]
    for event in events[:4]:
        assert event.url.startswith(f"{gw.url}/")
        assert httpx.get(event.url, timeout=30).status_code == 200
    usage = events[4].usage
    usage = usage if isinstance(usage, dict) else usage.model_dump()
    assert usage["generated_images"] == 4


def test_group_without_stream_is_one_answer(via: Ark) -> None:
    answer = via.images.generate(
        model="ark-direct", prompt=GROUP_OF_4, size="1K", response_format="b64_json", sequential_image_generation="auto"
    )
    assert len(answer.data) == 4 and answer.usage.generated_images == 4


# --- errors and bookkeeping --------------------------------------------------------------------------


def test_upstream_400_reaches_the_client_with_its_code_and_param(gw: LiveServer) -> None:
    too_long = "a red fox " * (UPSTREAM_PROMPT_LIMIT // 5)  # fine here, too long upstream
    response = httpx.post(
        f"{gw.url}/api/v3/images/generations", json={"model": "ark-relay", "prompt": too_long}, timeout=60
    )
    error = assert_error(response, 400, "InvalidParameter", "prompt")
    assert "prompt" in error["message"]


def test_upstream_request_id_in_the_ledger_and_the_log(via: Ark, gw: LiveServer, upstream: LiveServer) -> None:
    via.images.generate(model="ark-direct", prompt="ledger check", size="1K", response_format="url")
    store = AccountStore.open(gw.data_dir)
    row = next(r for r in reversed(store.usage_records()) if r.status == "ok" and r.upstream_request_id)
    assert re.fullmatch(r"[0-9a-f]{32}", row.upstream_request_id or "")
    wait_until(lambda: f"request_id={row.upstream_request_id}" in upstream.log.read_text(), "the upstream logged it")
    wait_until(lambda: f"upstream_request_id={row.upstream_request_id}" in gw.log.read_text(), "the gateway logged it")


def test_models_list_the_engine_kind(gw: LiveServer) -> None:
    models = httpx.get(f"{gw.url}/v1/models", timeout=30).json()["data"]
    assert {m["id"]: m["engine"] for m in models} == {"ark-relay": "ark", "ark-direct": "ark"}


def test_every_field_is_forwarded_with_the_upstream_model() -> None:
    engine = ArkEngine.from_options("mine", {"upstream_model": "doubao-seedream-4-0-250828", "rehost": True})
    sent = {
        "prompt": "p",
        "image": "data:image/png;base64,AAAA",
        "tools": [{"type": "web_search"}],
        "optimize_prompt_options": {"thinking": "auto"},
        "output_format": "png",
        "watermark": True,
        "response_format": "url",
    }
    job = ImageJob(
        model="mine",
        tasks=(ImageTask(0, "p", 1),),
        width=1024,
        height=1024,
        fields=sent,
        forwarded=("data:image/png;base64,AAAA",),
        response_format="url",
    )
    body, streamed = engine.payload(job)
    assert body == {**sent, "model": "doubao-seedream-4-0-250828", "response_format": "b64_json"}
    assert not streamed


# --- a key pool where one key is revoked upstream ------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, str]]:
    tmp = tmp_path_factory.mktemp("keyed")
    store = AccountStore.open(tmp / "data")
    _, revoked = store.create_key("revoked")
    _, good = store.create_key("good")
    store.revoke_key("revoked")
    server = start_server(tmp, "--auth")
    yield server, revoked, good
    stop_server(server)


def test_a_revoked_key_is_skipped_and_cooled_down(tmp_path: Path, keyed: tuple[LiveServer, str, str]) -> None:
    upstream, revoked, good = keyed
    base = f"{upstream.url}/api/v3"
    models: list[dict[str, Any]] = [
        {"name": "pooled", "engine": "ark", "base_url": base, "upstream_model": MODEL, "api_keys_env": "POOL"},
        {"name": "refused", "engine": "ark", "base_url": base, "upstream_model": MODEL, "api_keys": [revoked]},
    ]
    server = gateway(tmp_path, models, env={"POOL": f"{revoked},{good}"})
    try:
        for seed in range(3):
            body = {"model": "pooled", "prompt": PROMPT, "size": "1K", "response_format": "url", "seed": seed}
            answer = httpx.post(f"{server.url}/api/v3/images/generations", json=body, timeout=60)
            assert answer.status_code == 200, answer.text
        body = {"model": "refused", "prompt": PROMPT, "size": "1K"}
        refused = httpx.post(f"{server.url}/api/v3/images/generations", json=body, timeout=60)
        error = assert_error(refused, 502, "UpstreamServiceError")
        assert "upstream" in error["message"] and revoked not in refused.text
        wait_until(lambda: "status=UpstreamServiceError" in server.log.read_text(), "the refused request was logged")
    finally:
        stop_server(server)
    log = server.log.read_text()
    # three requests: the revoked key was tried once, then left out; "refused" has only that key
    assert log.count("upstream pooled refused key #1") == 1
    assert log.count("upstream refused refused key #1") == 1
    assert revoked not in log and good not in log
