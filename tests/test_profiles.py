"""Seedream profiles (issue 12): every model id answers by its profile, on every engine. Table-driven over
the profiles: tiers, pixel ranges, reference limits, refused fields, defaults; PNG output; tools and the
web-search plug point; created_at and usage.input_images; the official Ark SDK with newer model ids."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from volcenginesdkarkruntime import Ark
from volcenginesdkarkruntime.types.images.images import ContentGenerationTool

from conftest import LiveServer
from seedream_server.config import Settings
from seedream_server.http import create_app
from seedream_server.profiles import PROFILES, Profile, ProfileTable, apply_overrides
from seedream_server.provenance import read_provenance
from seedream_server.sizes import TIER_SIZES
from seedream_server.websearch import SearchResult, WebSearch
from support import GENERATIONS, assert_error, running

V40, V45, LITE, PRO, FLASH = (p.ids[0] for p in PROFILES)
BY_ID = {p.ids[0]: p for p in PROFILES}
ALL_TIERS = ("1K", "1.5K", "2K", "3K", "4K")


def req(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "prompt": "a quiet harbour", "response_format": "b64_json", **fields}


def png_uri() -> str:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.fixture
async def client(settings: Settings) -> Any:
    async with running(create_app(settings)) as c:
        yield c


# --- the table -----------------------------------------------------------------------------------


def test_every_id_and_spelling_finds_its_profile() -> None:
    table = ProfileTable()
    assert table.get("doubao-seedream-5-0-lite-260128").name == "seedream-5.0-lite"
    assert table.get("seedream-5-0-260128").name == "seedream-5.0-lite"  # BytePlus drops doubao-
    assert table.get("seedream-5.0-pro") is table.get("doubao-seedream-5-0-pro-260628")
    with pytest.raises(ValueError, match="unknown model profile"):
        table.get("doubao-seedream-9")


def test_derived_tier_sizes_are_in_their_profiles_ranges() -> None:
    assert TIER_SIZES["16:9"]["3K"] == (4096, 2304)  # the one published 3K size
    for profile in PROFILES:
        for tier in profile.tiers:
            for width, height in (sizes[tier] for sizes in TIER_SIZES.values()):
                assert profile.min_pixels <= width * height <= profile.max_pixels, (profile.name, tier)
                assert width % 16 == 0 and height % 16 == 0


def test_config_overrides_change_a_profile_or_add_one() -> None:
    changed = apply_overrides(PROFILES, [{"name": "seedream-4.5", "tiers": ["2K"]}])
    assert ProfileTable(changed).get(V45).tiers == ("2K",)
    added = apply_overrides(
        PROFILES,
        [{"name": "mine", "ids": ["my-model"], "tiers": ["1K"], "min_pixels": 1, "max_pixels": 9, "max_references": 1}],
    )
    assert ProfileTable(added).get("my-model").name == "mine"
    with pytest.raises(ValueError, match="unknown field"):
        apply_overrides(PROFILES, [{"name": "seedream-4.0", "colour": "red"}])


# --- validation by profile, through the server ----------------------------------------------------


@pytest.mark.parametrize(("model", "tier"), [(p.ids[0], t) for p in PROFILES for t in ALL_TIERS])
async def test_size_tiers(client: httpx.AsyncClient, model: str, tier: str) -> None:
    r = await client.post(GENERATIONS, json=req(model, size=tier))
    if tier in BY_ID[model].tiers:
        assert r.status_code == 200, r.text
        assert r.json()["data"][0]["size"] == "x".join(map(str, TIER_SIZES["1:1"][tier]))
    else:
        error = assert_error(r, 400, "InvalidParameter", param="size")
        assert model in error["message"] and tier in error["message"]


def _edges(profile: Profile) -> list[tuple[str, bool]]:
    """Explicit sizes at and just past the profile's pixel range (square-ish, within ratio bounds)."""
    low, high = profile.min_pixels, profile.max_pixels
    return [("1280x720" if low == 921_600 else "2560x1440", True), (f"{low // 1000 - 1}x1000", False)] + (
        [("4096x4096", True), ("4097x4096", False)]
        if high == 16_777_216
        else [("2048x2048", True), ("2200x2200", False)]
    )


@pytest.mark.parametrize(("model", "size", "ok"), [(p.ids[0], s, ok) for p in PROFILES for s, ok in _edges(p)])
async def test_pixel_ranges(client: httpx.AsyncClient, model: str, size: str, ok: bool) -> None:
    r = await client.post(GENERATIONS, json=req(model, size=size))
    if ok:
        assert r.status_code == 200, r.text
    else:
        assert_error(r, 400, "InvalidParameter", param="size")


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
async def test_reference_limits(client: httpx.AsyncClient, profile: Profile) -> None:
    limit, model = profile.max_references, profile.ids[0]
    r = await client.post(GENERATIONS, json=req(model, image=[png_uri()] * (limit + 1)))
    error = assert_error(r, 400, "InvalidParameter", param="image")
    assert f"takes at most {limit}" in error["message"] and model in error["message"]
    r = await client.post(GENERATIONS, json=req(model, image=[png_uri()] * limit, size="2048x2048"))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["input_images"] == limit


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    (PRO, {"sequential_image_generation": "auto"}, "sequential_image_generation"),
    (FLASH, {"sequential_image_generation": "auto"}, "sequential_image_generation"),
    (PRO, {"stream": True}, "stream"),
    (FLASH, {"stream": True}, "stream"),
    (PRO, {"tools": [{"type": "web_search"}]}, "tools"),
    (V40, {"tools": [{"type": "web_search"}]}, "tools"),
    (V45, {"tools": [{"type": "web_search"}]}, "tools"),
    (V45, {"optimize_prompt_options": {"mode": "fast"}}, "optimize_prompt_options.mode"),
    (LITE, {"optimize_prompt_options": {"mode": "fast"}}, "optimize_prompt_options.mode"),
    (V40, {"layer_decomposition": True}, "layer_decomposition"),
    (LITE, {"layer_decomposition": True}, "layer_decomposition"),
    (LITE, {"output_format": "webp"}, "output_format"),
    (PRO, {"output_format": "webp"}, "output_format"),
]


@pytest.mark.parametrize(("model", "fields", "param"), REFUSALS)
async def test_fields_a_profile_refuses(
    client: httpx.AsyncClient, model: str, fields: dict[str, Any], param: str
) -> None:
    error = assert_error(
        await client.post(GENERATIONS, json=req(model, **fields)), 400, "InvalidParameter", param=param
    )
    assert model in error["message"]


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    (V40, {"optimize_prompt_options": {"mode": "fast", "thinking": "enabled"}}),
    (FLASH, {"optimize_prompt_options": {"mode": "fast"}}),
    (V45, {"optimize_prompt_options": {"mode": "standard", "thinking": "disabled"}}),
    (V40, {"output_format": "webp"}),  # an OpenAI extension on 4.0
    (LITE, {"sequential_image_generation": "auto", "sequential_image_generation_options": {"max_images": 2}}),
]


@pytest.mark.parametrize(("model", "fields"), ACCEPTED)
async def test_fields_a_profile_takes(client: httpx.AsyncClient, model: str, fields: dict[str, Any]) -> None:
    r = await client.post(GENERATIONS, json=req(model, **fields))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("model", [p.ids[0] for p in PROFILES])
async def test_defaults_work_on_every_profile(client: httpx.AsyncClient, model: str) -> None:
    r = await client.post(GENERATIONS, json={"model": model, "prompt": "a lighthouse"})
    assert r.status_code == 200, r.text
    payload = r.json()
    assert payload["data"][0]["size"] == "2048x2048"
    assert payload["created_at"] == payload["created"]
    assert payload["usage"]["input_images"] == 0 and "tools" not in payload


async def test_png_output_carries_provenance(client: httpx.AsyncClient) -> None:
    r = await client.post(GENERATIONS, json=req(LITE, output_format="png", response_format="url"))
    assert r.status_code == 200, r.text
    url = httpx.URL(r.json()["data"][0]["url"])
    assert url.path.endswith(".png")
    image = await client.get(f"{url.path}?{url.query.decode()}")
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    assert read_provenance(image.content)["model"] == LITE


async def test_tools_are_echoed_and_counted_without_a_search_plug_in(client: httpx.AsyncClient) -> None:
    r = await client.post(GENERATIONS, json=req(LITE, tools=[{"type": "web_search"}]))
    assert r.status_code == 200, r.text
    payload = r.json()
    assert payload["tools"] == [{"type": "web_search"}]
    assert payload["usage"]["tool_usage"] == {"web_search": 0}


class RewritingSearch(WebSearch):
    """A web search that 'finds' one fact and appends it to the prompt."""

    seen: list[str] = []  # noqa: RUF012 - the prompts searched, for the test to read

    async def search(self, prompt: str) -> SearchResult:
        RewritingSearch.seen.append(prompt)
        return SearchResult(prompt=f"{prompt} (today: sunny, 21 °C)", searches=2)


async def test_a_web_search_plug_in_may_rewrite_the_prompt_and_counts_its_searches(settings: Settings) -> None:
    RewritingSearch.seen.clear()
    app = create_app(settings.with_overrides(web_search="test_profiles:RewritingSearch"))
    async with running(app) as client:
        r = await client.post(GENERATIONS, json=req(LITE, tools=[{"type": "web_search"}]))
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["tool_usage"] == {"web_search": 2}
        assert RewritingSearch.seen == ["a quiet harbour"]
        r = await client.post(GENERATIONS, json=req(LITE))  # no tools: no search
        assert "tool_usage" not in r.json()["usage"] and len(RewritingSearch.seen) == 1


async def test_models_list_shows_each_profile(client: httpx.AsyncClient) -> None:
    cards = {card["id"]: card for card in (await client.get("/v1/models")).json()["data"]}
    assert {card["profile"] for card in cards.values()} == {p.name for p in PROFILES}
    assert cards[PRO]["max_references"] == 10 and cards[PRO]["size_tiers"] == ["1K", "1.5K", "2K"]
    assert "seedream-5-0-lite-260128" in cards[LITE]["aliases"]


# --- the official Ark SDK with newer ids -----------------------------------------------------------


@pytest.fixture
def ark(live_server: LiveServer) -> Iterator[Ark]:
    client = Ark(base_url=f"{live_server.url}/api/v3", api_key="test", timeout=60, max_retries=0)
    yield client
    client.close()


def test_ark_sdk_with_5_0_lite_output_format_and_tools(ark: Ark) -> None:
    resp = ark.images.generate(
        model="doubao-seedream-5-0-lite-260128",
        prompt="a tram in Lisbon, 16:9",
        size="3K",
        output_format="png",
        tools=[ContentGenerationTool(type="web_search")],
        response_format="b64_json",
    )
    assert resp.data and resp.data[0].b64_json
    data = base64.b64decode(resp.data[0].b64_json)
    assert data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(data)).size == (4096, 2304)
    assert resp.usage is not None and resp.usage.tool_usage is not None
    assert resp.usage.tool_usage.web_search == 0
    assert resp.created_at == resp.created


def test_ark_sdk_with_4_5(ark: Ark) -> None:
    resp = ark.images.generate(model=V45, prompt="a red fox in snow", size="2K", response_format="b64_json")
    assert resp.data and resp.data[0].size == "2048x2048"
    assert resp.usage is not None and resp.usage.input_images == 0
