"""Streaming through a real ``seedream serve`` process: the Ark SDK, raw SSE over the socket, disconnects."""

from __future__ import annotations

import json
import re

import httpx
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime.types.images import SequentialImageGenerationOptions

from conftest import LiveServer
from support import GENERATIONS, MODEL, SEED_PROMPT, body, iter_sse, served_metric, wait_until


def test_ark_sdk_streams_a_group(live_server: LiveServer) -> None:
    client = Ark(base_url=f"{live_server.url}/api/v3", api_key="test-key")
    stream = client.images.generate(
        model=MODEL,
        prompt=SEED_PROMPT,
        size="1K",
        response_format="url",
        sequential_image_generation="auto",
        seed=5,
        watermark=False,
        stream=True,
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_succeeded"] * 3 + ["image_generation.completed"]
    assert [e.image_index for e in events[:3]] == [0, 1, 2]
    for event in events[:3]:
        assert event.size == "1024x1024"
        r = httpx.get(event.url)
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    usage = events[3].usage  # the SDK's event union cannot tell the two types apart: usage may stay a dict
    usage = usage if isinstance(usage, dict) else usage.model_dump()
    assert usage == {"generated_images": 3, "output_tokens": 3 * 4096, "total_tokens": 3 * 4096, "input_images": 0} | (
        {"tool_usage": None} if "tool_usage" in usage else {}
    )


def test_ark_sdk_non_streaming_group(live_server: LiveServer) -> None:
    client = Ark(base_url=f"{live_server.url}/api/v3", api_key="test-key")
    resp = client.images.generate(
        model=MODEL,
        prompt=SEED_PROMPT,
        size="1K",
        response_format="b64_json",
        sequential_image_generation="auto",
        sequential_image_generation_options=SequentialImageGenerationOptions(max_images=2),
    )
    assert len(resp.data) == 2
    assert resp.usage.generated_images == 2


def _stored(live_server: LiveServer, request_id: str) -> int:
    return len(list((live_server.data_dir / "images").glob(f"{request_id}_*")))


def test_raw_sse_images_arrive_one_by_one(live_server: LiveServer) -> None:
    """Each image event is on the wire before the next image is finished (not all at the end)."""
    payload = body(
        prompt="a series of 4 pictures of a cat",
        size="4K",
        stream=True,
        sequential_image_generation="auto",
        response_format="url",
    )
    kinds: list[str | None] = []
    stored_on_arrival: list[int] = []  # the request's images on disk when each image's event came in
    with httpx.stream("POST", f"{live_server.url}{GENERATIONS}", json=payload, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        request_id = r.headers["x-request-id"]
        for event in iter_sse(r):
            if event.event == "image_generation.partial_succeeded":
                stored_on_arrival.append(_stored(live_server, request_id))
            kinds.append(event.event if event.data != "[DONE]" else "[DONE]")
    assert kinds == ["image_generation.partial_succeeded"] * 4 + ["image_generation.completed", "[DONE]"]
    # an image is stored before its event is sent, and the first event came while the last image was not
    # made yet: sent as it was ready, not batched at the end
    assert all(count >= index + 1 for index, count in enumerate(stored_on_arrival)), stored_on_arrival
    assert stored_on_arrival[0] < 4, stored_on_arrival


def _cancelled(live_server: LiveServer) -> float:
    return served_metric(live_server.url, "seedream_requests_total", model=MODEL, status="cancelled")


def test_disconnect_cancels_the_rest_of_the_group(live_server: LiveServer) -> None:
    payload = body(
        prompt="a series of 15 pictures of a lighthouse",
        size="4K",
        stream=True,
        sequential_image_generation="auto",
        response_format="url",
    )
    cancelled_before = _cancelled(live_server)
    with httpx.stream("POST", f"{live_server.url}{GENERATIONS}", json=payload, timeout=120) as r:
        request_id = r.headers["x-request-id"]
        first = next(iter_sse(r))
        assert json.loads(first.data)["image_index"] == 0
    # the client is gone: the server counts the job as cancelled once it has stopped it (its producer
    # awaited, its ledger row written); from then on nothing of it may be stored
    wait_until(lambda: _cancelled(live_server) > cancelled_before, "the job was counted as cancelled")
    settled = _stored(live_server, request_id)
    assert settled <= 3, f"{settled} of 15 images were stored after the client left"
    # a later request on the same engine runs to the end; still nothing more of the cancelled one
    later = httpx.post(f"{live_server.url}{GENERATIONS}", json=body(size="4K", response_format="url"), timeout=120)
    assert later.status_code == 200
    assert _stored(live_server, request_id) == settled
    metrics = httpx.get(f"{live_server.url}/metrics").text
    assert 'status="cancelled"' in metrics
    assert re.search(r"^seedream_inflight_requests 0\.0$", metrics, re.M)
