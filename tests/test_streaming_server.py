"""Streaming through a real ``seedream serve`` process: the Ark SDK, raw SSE over the socket, disconnects."""

from __future__ import annotations

import json
import time

import httpx
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime.types.images import SequentialImageGenerationOptions

from conftest import LiveServer

MODEL = "doubao-seedream-4-0-250828"
SEED_PROMPT = "生成3张女孩和奶牛玩偶在游乐园开心地坐过山车的图片，涵盖早晨、中午、晚上"


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
    assert usage == {"generated_images": 3, "output_tokens": 3 * 4096, "total_tokens": 3 * 4096} | (
        {"input_images": None, "tool_usage": None} if "tool_usage" in usage else {}
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


def test_raw_sse_images_arrive_one_by_one(live_server: LiveServer) -> None:
    """Each image event is on the wire before the next image is finished (not all at the end)."""
    arrivals: list[tuple[float, str]] = []
    payload = {
        "model": MODEL,
        "prompt": "a series of 4 pictures of a cat",
        "size": "4K",
        "stream": True,
        "sequential_image_generation": "auto",
        "response_format": "url",
    }
    start = time.monotonic()
    with httpx.stream("POST", f"{live_server.url}/api/v3/images/generations", json=payload, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                arrivals.append((time.monotonic() - start, line[6:].strip()))
            elif line.startswith("data: [DONE]"):
                arrivals.append((time.monotonic() - start, "[DONE]"))
    kinds = [k for _, k in arrivals]
    assert kinds == ["image_generation.partial_succeeded"] * 4 + ["image_generation.completed", "[DONE]"]
    first, last = arrivals[0][0], arrivals[3][0]
    assert last - first > 0.2  # the first image was sent well before the last one was ready


def _stored(live_server: LiveServer, request_id: str) -> int:
    return len(list((live_server.data_dir / "images").glob(f"{request_id}_*")))


def test_disconnect_cancels_the_rest_of_the_group(live_server: LiveServer) -> None:
    payload = {
        "model": MODEL,
        "prompt": "a series of 15 pictures of a lighthouse",
        "size": "4K",
        "stream": True,
        "sequential_image_generation": "auto",
        "response_format": "url",
    }
    with httpx.stream("POST", f"{live_server.url}/api/v3/images/generations", json=payload, timeout=120) as r:
        request_id = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("data:"):
                assert json.loads(line[5:])["image_index"] == 0
                break
    # the client is gone: wait for the server to settle, then check nothing more gets made
    settled = _stored(live_server, request_id)
    for _ in range(30):
        time.sleep(0.3)
        now = _stored(live_server, request_id)
        if now == settled:
            break
        settled = now
    time.sleep(2.0)
    assert _stored(live_server, request_id) == settled
    assert settled <= 3, f"{settled} of 15 images were stored after the client left"
    metrics = httpx.get(f"{live_server.url}/metrics").text
    assert 'status="cancelled"' in metrics
