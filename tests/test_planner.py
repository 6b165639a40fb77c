"""Tests for the group planner: the rules (a table of Chinese and English prompts) and the LLM planner
against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from seedream_server.planner import (
    DEFAULT_SERIES_COUNT,
    GroupPlan,
    LLMPlanner,
    Planner,
    RulePlanner,
    plan_group,
)

SEED_PROMPT = "生成3张女孩和奶牛玩偶在游乐园开心地坐过山车的图片,涵盖早晨、中午、晚上"

# (prompt, expected number of images with max_images=15, expected variants or None)
CASES: list[tuple[str, int, tuple[str, ...] | None]] = [
    # --- Chinese: explicit counts
    ("生成3张可爱小狗的图片", 3, None),
    ("画三幅山水画", 3, None),
    ("两张猫咪在沙发上睡觉的照片", 2, None),
    ("生成十二张城市夜景图", 12, None),
    ("帮我设计三款咖啡包装", 3, None),
    ("四格漫画：小猫钓鱼", 4, None),
    ("九宫格头像，同一个女孩", 9, None),
    ("六宫格表情包", 6, None),
    ("生成两三张海边日落的照片", 3, None),
    ("一个女孩的三个表情：开心、难过、生气", 3, ("开心", "难过", "生气")),
    # --- Chinese: enumerations
    (SEED_PROMPT, 3, ("早晨", "中午", "晚上")),
    ("生成一组图片，分别是春、夏、秋、冬", 4, ("春", "夏", "秋", "冬")),
    ("一个小女孩在公园里放风筝，画面依次为日出、正午、黄昏", 3, ("日出", "正午", "黄昏")),
    ("生成一组表情包：开心、难过、生气、惊讶", 4, ("开心", "难过", "生气", "惊讶")),
    (
        "生成三张图片：1. 早晨的海边 2. 中午的沙滩 3. 夜晚的灯塔",
        3,
        ("早晨的海边", "中午的沙滩", "夜晚的灯塔"),
    ),
    ("第一张是早晨，第二张是中午，第三张是晚上", 3, ("早晨", "中午", "晚上")),
    ("分镜1：主角出门；分镜2：遇到朋友；分镜3：一起吃饭", 3, ("主角出门", "遇到朋友", "一起吃饭")),
    ("早晨、中午、晚上的城市天际线", 3, ("早晨", "中午", "晚上")),
    ("一棵树的春夏秋冬", 4, ("春", "夏", "秋", "冬")),
    ("请生成一组插画，包括猫、狗、兔子", 3, ("猫", "狗", "兔子")),
    ("生成一组图，女孩在森林里分别遇到兔子、小鹿和狐狸", 3, ("兔子", "小鹿", "狐狸")),
    (
        "生成4张图，画面分别展示春天的樱花、夏天的海滩、秋天的枫叶、冬天的雪景",
        4,
        ("春天的樱花", "夏天的海滩", "秋天的枫叶", "冬天的雪景"),
    ),
    ("生成3张图：猫、狗、兔子", 3, ("猫", "狗", "兔子")),
    ("生成2张图片,涵盖早晨、中午、晚上", 2, ("早晨", "中午")),
    # --- Chinese: series words, default count
    ("生成一组女孩的写真", DEFAULT_SERIES_COUNT, None),
    ("一组分镜，讲述小猫的一天", DEFAULT_SERIES_COUNT, None),
    ("系列插画：城市里的猫", DEFAULT_SERIES_COUNT, None),
    ("生成几张海报", DEFAULT_SERIES_COUNT, None),
    ("用连环画讲述龟兔赛跑的故事", DEFAULT_SERIES_COUNT, None),
    # --- Chinese: negatives
    ("一只猫坐在窗台上", 1, None),
    ("3D风格的小熊，2K分辨率，16:9", 1, None),
    ("2025年3月5日的北京街头", 1, None),
    ("价格¥99的咖啡杯，旁边写着3.5元", 1, None),
    ("一个3岁的小男孩在吹蜡烛", 1, None),
    ("第一名的奖杯放在桌上", 1, None),
    ("两只猫在草地上玩", 1, None),
    ("一个果篮，里面有苹果、香蕉、橙子", 1, None),
    ("画一个时钟，显示3点15分，旁边是50%的进度条", 1, None),
    ("用一张图展示春夏秋冬", 1, None),
    ("要求：1. 高清 2. 色彩明亮 3. 无文字", 1, None),
    ("苹果15系列手机放在木桌上", 1, None),
    ("一组沙发放在客厅里", 1, None),
    ("一张桌子上放着一盆花", 1, None),
    # --- English: explicit counts
    ("Generate 4 images of a lighthouse", 4, None),
    ("four pictures of a cat", 4, None),
    ("a set of four watercolor landscapes", 4, None),
    ("Make a set of four", 4, None),
    ("a series of 6 illustrations of a fox", 6, None),
    ("a 4-panel comic about a cat", 4, None),
    ("three different logo designs for a bakery", 3, None),
    ("a 2x2 grid of cat portraits", 4, None),
    ("a triptych of the sea", 3, None),
    ("A storyboard with 6 frames showing a chef cooking", 6, None),
    # --- English: enumerations
    ("A girl riding a roller coaster in the morning, noon and night", 3, ("morning", "noon", "night")),
    ("A tree in spring, summer, autumn and winter", 4, ("spring", "summer", "autumn", "winter")),
    ("Draw a fox, covering spring, summer, autumn and winter", 4, ("spring", "summer", "autumn", "winter")),
    (
        "Create 3 posters for a coffee shop: espresso, latte and cappuccino",
        3,
        ("espresso", "latte", "cappuccino"),
    ),
    (
        "Image 1: a boy waking up. Image 2: the boy eating breakfast. Image 3: the boy at school.",
        3,
        ("a boy waking up", "the boy eating breakfast", "the boy at school"),
    ),
    ("3 images: 1. morning 2. noon 3. night", 3, ("morning", "noon", "night")),
    (
        "one image for each season: spring, summer, autumn, winter",
        4,
        ("spring", "summer", "autumn", "winter"),
    ),
    ("Make two versions: one realistic, one cartoon", 2, ("one realistic", "one cartoon")),
    # --- English: series words
    ("a storyboard of a space adventure", DEFAULT_SERIES_COUNT, None),
    ("several pictures of a sunset", DEFAULT_SERIES_COUNT, None),
    ("Create variations of this logo", DEFAULT_SERIES_COUNT, None),
    ("Make a series of the four seasons", 4, ("spring", "summer", "autumn", "winter")),
    # --- English: negatives
    ("two cats playing with yarn", 1, None),
    ("a 4K photo of a 3D robot at 16:9", 1, None),
    ("A 1080p wallpaper of Tokyo at night", 1, None),
    ("Draw a cat at 3 pm wearing a $5 hat, 50% off sale", 1, None),
    ("3 cats and 2 dogs in a park on March 5, 2025", 1, None),
    ("a bowl of apples, bananas and oranges", 1, None),
    ("a poster showing a cat, a dog and a bird", 1, None),
    ("a set of four mugs on a table", 1, None),
    ("Generate a single image of a castle", 1, None),
    ("the first place trophy, 2nd edition, a 5-year-old boy", 1, None),
    ('a poster with the text "TOP 10 PHOTOS"', 1, None),
    ("海报上写着“买两张送一张”", 1, None),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 45
    assert len({prompt for prompt, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(("prompt", "count", "variants"), CASES, ids=[c[0][:40] for c in CASES])
def test_plan_group_table(prompt: str, count: int, variants: tuple[str, ...] | None) -> None:
    plan = plan_group(prompt, 15)
    assert plan.count == count, plan
    assert plan.reason
    if count == 1:
        assert plan.prompts == (prompt,)
        return
    assert len(set(plan.prompts)) == count, "per-image prompts must be distinct"
    sep = "，" if any("\u4e00" <= ch <= "\u9fff" for ch in prompt) else ", "
    if variants is not None:
        for image_prompt, variant in zip(plan.prompts, variants, strict=True):
            assert image_prompt.endswith(variant), (image_prompt, variant)
            head = image_prompt[: -len(variant)]
            assert head == "" or head.endswith(sep), image_prompt
    else:
        for i, image_prompt in enumerate(plan.prompts, start=1):
            numbering = f"第{i}张/共{count}张" if sep == "，" else f"image {i} of {count}"
            assert image_prompt.endswith(sep + numbering), image_prompt


def test_seed_example_gives_exactly_morning_noon_night() -> None:
    plan = plan_group(SEED_PROMPT, 3)
    base = "生成3张女孩和奶牛玩偶在游乐园开心地坐过山车的图片"
    assert plan.prompts == (f"{base}，早晨", f"{base}，中午", f"{base}，晚上")
    assert plan.reason == "explicit count 3"
    # the same with full-width punctuation
    assert plan_group(SEED_PROMPT.replace(",", "，"), 15).prompts == plan.prompts


def test_count_beats_enumeration_and_pads_with_numbers() -> None:
    plan = plan_group("生成5张图片,涵盖早晨、中午、晚上", 15)
    assert plan.count == 5
    assert len(set(plan.prompts)) == 5
    assert [p.split("，")[1] for p in plan.prompts] == ["早晨", "中午", "晚上", "早晨", "中午"]
    assert plan.prompts[3].endswith("第4张/共5张")
    english = plan_group("5 images of a street in the morning, noon and night", 15)
    assert english.count == 5
    assert english.prompts[4].endswith(", noon, image 5 of 5")


@pytest.mark.parametrize("cap", range(1, 16))
def test_max_images_caps(cap: int) -> None:
    plan = plan_group("生成15张小狗的照片", cap)
    assert plan.count == cap
    if cap == 1:
        assert plan.prompts == ("生成15张小狗的照片",)
    else:
        assert plan.prompts[-1].endswith(f"第{cap}张/共{cap}张")
        assert "capped" in plan.reason or cap == 15


def test_max_images_caps_enumerations_and_series() -> None:
    assert plan_group(SEED_PROMPT, 2).prompts[-1].endswith("，中午")
    assert plan_group("a storyboard of a space adventure", 3).count == 3
    assert plan_group("Generate 20 images of a cat", 15).count == 15
    assert plan_group("九宫格头像", 1).prompts == ("九宫格头像",)


@pytest.mark.parametrize("cap", [0, -1, 16])
def test_max_images_out_of_range(cap: int) -> None:
    with pytest.raises(ValueError, match="max_images"):
        plan_group("生成3张图", cap)


def test_deterministic() -> None:
    first = [plan_group(prompt, 15) for prompt, _, _ in CASES]
    second = [plan_group(prompt, 15) for prompt, _, _ in reversed(CASES)]
    assert first == list(reversed(second))


def test_single_and_empty_prompts_are_unchanged() -> None:
    for prompt in ["", "   ", "一只猫。", "A cat on a mat."]:
        plan = plan_group(prompt, 15)
        assert plan == GroupPlan((prompt,), "single")
        assert plan.count == 1


def test_group_plan_needs_a_prompt() -> None:
    with pytest.raises(ValueError):
        GroupPlan(())
    assert GroupPlan(("a", "b"), "x").count == 2


async def test_rule_planner_wraps_plan_group() -> None:
    planner: Planner = RulePlanner()
    assert await planner.plan(SEED_PROMPT, 3) == plan_group(SEED_PROMPT, 3)
    await planner.aclose()


# --------------------------------------------------------------------------------------------
# LLM planner against a real local chat-completions server
# --------------------------------------------------------------------------------------------

GOOD_PROMPTS = ["a fox at dawn", "a fox at noon", "a fox at night"]


@dataclass
class FakeChatServer:
    base: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

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
                state.release.wait(10)
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
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="seedream_server.planner"):
        plan = await planner.plan("生成3张狐狸的图片", 15)
    assert time.monotonic() - started < 5
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
        async def plan(self, prompt: str, max_images: int) -> GroupPlan:
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

    from seedream_server.app import create_app
    from seedream_server.config import load_settings

    base = load_settings(overrides={"data_dir": str(tmp_path / "data"), "auth": False}, environ={})
    body = {
        "model": "doubao-seedream-4-0-250828",
        "prompt": "a fox in a forest",
        "size": "1280x720",
        "sequential_image_generation": "auto",
        "response_format": "b64_json",
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
