"""Tests for seedream_server.planner.llm: the LLM planner against a real chat-completions server on
127.0.0.1, its reply parsing, and its fallback to the rules."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from seedream_server.planner import GroupPlan, LLMPlanner, Planner, plan_group
from seedream_server.planner.llm import CAREFUL_SUFFIX, SHORT_SYSTEM_PROMPT, SYSTEM_PROMPT, parse_prompts

SEED_PROMPT = "生成3张女孩和奶牛玩偶在游乐园开心地坐过山车的图片,涵盖早晨、中午、晚上"

GOOD_PROMPTS = ["a fox at dawn", "a fox at noon", "a fox at night"]


@dataclass
class FakeChatServer:
    base: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    slow_started: threading.Event = field(default_factory=threading.Event)
    slow_replied: threading.Event = field(default_factory=threading.Event)

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}"


def _chat_reply(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }


@pytest.fixture(scope="module")
def chat_server() -> Iterator[FakeChatServer]:
    state = FakeChatServer(base="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            mode = self.path.strip("/").split("/")[0]
            if not self.path.endswith("/chat/completions"):
                self._send(404, {"error": "not found"})
            elif mode == "good":
                self._send(200, _chat_reply(json.dumps({"prompts": GOOD_PROMPTS})))
            elif mode == "fenced":
                fenced = "```json\n" + json.dumps({"prompts": GOOD_PROMPTS[:2]}) + "\n```"
                self._send(200, _chat_reply(fenced))
            elif mode == "toomany":
                self._send(200, _chat_reply(json.dumps({"prompts": [f"p{i}" for i in range(20)]})))
            elif mode == "counted":
                counted = ["生成3张狐狸的图片，早晨", "a set of four stickers of a fox, noon"]
                self._send(200, _chat_reply(json.dumps({"prompts": counted}, ensure_ascii=False)))
            elif mode == "single":
                self._send(200, _chat_reply(json.dumps({"prompts": ["rewritten"]})))
            elif mode == "garbage":
                self._send(200, _chat_reply("Sure! Here are some prompts: 1. a fox"))
            elif mode == "empty":
                self._send(200, _chat_reply(json.dumps({"prompts": []})))
            elif mode == "wrongshape":
                self._send(200, _chat_reply(json.dumps({"prompts": ["ok", 3, None]})))
            elif mode == "nochoices":
                self._send(200, {"object": "chat.completion"})
            elif mode == "html":
                self._send_raw(200, b"<html>gateway</html>", "text/html")
            elif mode == "error":
                self._send(500, {"error": {"message": "boom"}})
            elif mode == "slow":
                state.slow_started.set()
                state.release.wait(10)
                state.slow_replied.set()
                self._send(200, _chat_reply(json.dumps({"prompts": GOOD_PROMPTS})))
            else:
                self._send(404, {"error": "unknown mode"})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            self._send_raw(status, json.dumps(payload).encode(), "application/json")

        def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # the slow handler writes to a socket the client already closed

    server = Server(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as c:
        yield c


async def test_llm_planner_uses_the_reply(chat_server: FakeChatServer, client: httpx.AsyncClient) -> None:
    planner = LLMPlanner(chat_server.url("good") + "/", "planner-model", api_key="sk-test", client=client)
    plan = await planner.plan("a fox through the day", 15)
    assert plan.prompts == tuple(GOOD_PROMPTS)
    assert plan.reason == "llm 3"
    request = chat_server.requests[-1]
    assert request["path"] == "/good/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "planner-model"
    user = json.loads(request["body"]["messages"][-1]["content"])
    assert user == {"prompt": "a fox through the day", "max_images": 15}
    await planner.aclose()
    assert not client.is_closed, "an injected client belongs to the caller"


def _system(request: dict[str, Any]) -> str:
    messages = request["body"]["messages"]
    assert messages[0]["role"] == "system"
    return str(messages[0]["content"])


@pytest.mark.parametrize(
    ("thinking", "system"),
    [
        (None, SYSTEM_PROMPT),
        ("auto", SYSTEM_PROMPT),
        ("enabled", SYSTEM_PROMPT + "\n" + CAREFUL_SUFFIX),
        ("disabled", SHORT_SYSTEM_PROMPT),
    ],
)
async def test_llm_planner_asks_by_thinking(
    thinking: str | None, system: str, chat_server: FakeChatServer, client: httpx.AsyncClient
) -> None:
    """optimize_prompt_options.thinking picks the system prompt; the user message and reply stay the same."""
    planner = LLMPlanner(chat_server.url("good"), "m", client=client)
    plan = await planner.plan("a fox through the day", 15, thinking=thinking)
    assert plan.prompts == tuple(GOOD_PROMPTS)
    request = chat_server.requests[-1]
    assert _system(request) == system
    assert "thinking" not in request["body"], "no reasoning field unless the planner is told to send it"
    user = json.loads(request["body"]["messages"][-1]["content"])
    assert user == {"prompt": "a fox through the day", "max_images": 15}


async def test_llm_planner_thinking_modes_differ(chat_server: FakeChatServer, client: httpx.AsyncClient) -> None:
    planner = LLMPlanner(chat_server.url("good"), "m", client=client)
    systems = {}
    for thinking in ("disabled", "auto", "enabled"):
        await planner.plan("x", 15, thinking=thinking)
        systems[thinking] = _system(chat_server.requests[-1])
    assert len(systems["disabled"]) < len(systems["auto"]) < len(systems["enabled"])
    assert "carefully" in systems["enabled"] and "carefully" not in systems["auto"]


@pytest.mark.parametrize("thinking", [None, "auto", "enabled", "disabled"])
async def test_llm_planner_sends_the_ark_thinking_field_when_asked(
    thinking: str | None, chat_server: FakeChatServer, client: httpx.AsyncClient
) -> None:
    planner = LLMPlanner(chat_server.url("good"), "m", client=client, thinking_field=True)
    await planner.plan("x", 15, thinking=thinking)
    assert chat_server.requests[-1]["body"]["thinking"] == {"type": thinking or "auto"}


async def test_llm_planner_rejects_an_unknown_thinking_mode(
    chat_server: FakeChatServer, client: httpx.AsyncClient
) -> None:
    planner = LLMPlanner(chat_server.url("good"), "m", client=client)
    sent = len(chat_server.requests)
    with pytest.raises(ValueError, match="thinking"):
        await planner.plan("x", 15, thinking="maybe")
    assert len(chat_server.requests) == sent


async def test_llm_planner_fallback_gets_the_thinking_mode(client: httpx.AsyncClient) -> None:
    seen: list[str | None] = []

    class Recording(Planner):
        async def plan(self, prompt: str, max_images: int, *, thinking: str | None = None) -> GroupPlan:
            seen.append(thinking)
            return GroupPlan((prompt,), "recorded")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    planner = LLMPlanner(f"http://127.0.0.1:{port}", "m", client=client, fallback=Recording())
    assert (await planner.plan("x", 15, thinking="disabled")).reason == "recorded"
    assert seen == ["disabled"]


async def test_llm_planner_drops_count_words_the_model_kept(
    chat_server: FakeChatServer, client: httpx.AsyncClient
) -> None:
    planner = LLMPlanner(chat_server.url("counted"), "m", client=client)
    plan = await planner.plan("狐狸", 15)
    assert plan.prompts == ("生成狐狸的图片，早晨", "a sticker of a fox, noon")


async def test_llm_planner_without_key_sends_no_auth(chat_server: FakeChatServer, client: httpx.AsyncClient) -> None:
    planner = LLMPlanner(chat_server.url("fenced"), "m", client=client, json_mode=False)
    plan = await planner.plan("两只狐狸", 15)
    assert plan.prompts == tuple(GOOD_PROMPTS[:2])
    assert chat_server.requests[-1]["auth"] is None
    assert "response_format" not in chat_server.requests[-1]["body"]


async def test_llm_planner_cuts_to_max_images(chat_server: FakeChatServer, client: httpx.AsyncClient) -> None:
    planner = LLMPlanner(chat_server.url("toomany"), "m", client=client)
    plan = await planner.plan("many foxes", 5)
    assert plan.prompts == ("p0", "p1", "p2", "p3", "p4")


async def test_llm_planner_single_keeps_the_prompt(chat_server: FakeChatServer, client: httpx.AsyncClient) -> None:
    planner = LLMPlanner(chat_server.url("single"), "m", client=client)
    assert (await planner.plan("一只狐狸", 15)).prompts == ("一只狐狸",)


@pytest.mark.parametrize("mode", ["garbage", "empty", "wrongshape", "nochoices", "html", "error", "missing"])
async def test_llm_planner_falls_back_on_bad_replies(
    mode: str, chat_server: FakeChatServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    planner = LLMPlanner(chat_server.url(mode), "m", client=client)
    with caplog.at_level(logging.WARNING, logger="seedream_server.planner"):
        plan = await planner.plan(SEED_PROMPT, 3)
    assert plan == plan_group(SEED_PROMPT, 3)
    assert any("fallback" in r.getMessage() for r in caplog.records)


async def test_llm_planner_falls_back_on_timeout(
    chat_server: FakeChatServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    planner = LLMPlanner(chat_server.url("slow"), "m", client=client, timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="seedream_server.planner"):
        plan = await planner.plan("生成3张狐狸的图片", 15)
    # the request reached the server, and the planner gave up before the server replied
    assert chat_server.slow_started.is_set()
    assert not chat_server.slow_replied.is_set()
    assert plan == plan_group("生成3张狐狸的图片", 15)
    assert any("fallback" in r.getMessage() for r in caplog.records)


async def test_llm_planner_falls_back_when_nothing_listens(client: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    planner = LLMPlanner(f"http://127.0.0.1:{port}/v1", "m", client=client, timeout=2)
    assert await planner.plan("a set of four", 15) == plan_group("a set of four", 15)


async def test_llm_planner_uses_a_custom_fallback(client: httpx.AsyncClient) -> None:
    class Fixed(Planner):
        async def plan(self, prompt: str, max_images: int, *, thinking: str | None = None) -> GroupPlan:
            return GroupPlan(("fixed",), "fixed")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    planner = LLMPlanner(f"http://127.0.0.1:{port}", "m", client=client, fallback=Fixed())
    assert (await planner.plan("x", 15)).reason == "fixed"


async def test_llm_planner_owns_its_client(chat_server: FakeChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    planner = LLMPlanner(chat_server.url("good"), "m")
    assert (await planner.plan("x", 15)).count == 3
    await planner.aclose()
    await planner.aclose()


async def test_llm_planner_rejects_bad_arguments(chat_server: FakeChatServer) -> None:
    with pytest.raises(ValueError):
        LLMPlanner(chat_server.url("good"), "m", timeout=0)
    planner = LLMPlanner(chat_server.url("good"), "m")
    with pytest.raises(ValueError, match="max_images"):
        await planner.plan("x", 0)
    await planner.aclose()


async def test_server_uses_the_llm_planner_when_configured(chat_server: FakeChatServer, tmp_path: Path) -> None:
    """planner_url turns the LLM planner on for the whole server; its failure falls back to the rules."""
    from dataclasses import replace

    from seedream_server.config import load_settings
    from seedream_server.http import create_app

    base = load_settings(overrides={"data_dir": str(tmp_path / "data"), "auth": False}, environ={})
    body: dict[str, Any] = {
        "model": "doubao-seedream-4-0-250828",
        "prompt": "a fox in a forest",
        "size": "1280x720",
        "sequential_image_generation": "auto",
        "response_format": "b64_json",
        "optimize_prompt_options": {"thinking": "disabled"},
    }
    for mode, expected in (("good", len(GOOD_PROMPTS)), ("error", 1)):
        settings = replace(base, planner_url=chat_server.url(mode), planner_model="planner-test")
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                r = await client.post("/api/v3/images/generations", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["generated_images"] == expected
    sent = [req for req in chat_server.requests if req["body"].get("model") == "planner-test"]
    assert sent and "a fox in a forest" in json.dumps(sent[0]["body"], ensure_ascii=False)
    # the request's optimize_prompt_options.thinking reached the planner
    assert _system(sent[0]) == SHORT_SYSTEM_PROMPT


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompts": ["a", " b "]}', ["a", "b"]),
        ('```json\n{"prompts": ["a", "b"]}\n```', ["a", "b"]),
        ('```\n{"prompts": ["a"]}\n```', ["a"]),
    ],
)
def test_parse_prompts_reads_replies(content: str, expected: list[str]) -> None:
    assert parse_prompts(content) == expected


@pytest.mark.parametrize(
    "content",
    [None, 3, "not json", '["a", "b"]', '{"prompts": "a"}', '{"prompts": []}', '{"prompts": ["a", ""]}'],
)
def test_parse_prompts_rejects_bad_replies(content: object) -> None:
    with pytest.raises(ValueError):
        parse_prompts(content)
