"""The playground page (``GET /``) as a user sees it, in headless Chromium (Playwright driving Debian's
``chromium``), at desktop (1280x800) and phone (390x844) widths, against a real server with API keys.

Screenshots: ``SEEDREAM_UPDATE_SCREENSHOTS=1 pytest tests/test_playground.py`` writes
``docs/playground-desktop.png`` and ``docs/playground-phone.png``; otherwise they go to the test's temp dir.
Skipped, with the reason, only where Chromium or Playwright is not installed (``.ci/run`` installs both).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from conftest import LiveServer, start_server, stop_server
from seedream_server.accounts import AccountStore
from seedream_server.sizes import TIER_SIZES
from support import wait_until

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover - the test extra installs it
    sync_api = None

CHROMIUM = os.environ.get("SEEDREAM_CHROMIUM", "/usr/bin/chromium")

DOCS = Path(__file__).resolve().parent.parent / "docs"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
KEY_LINE = re.compile(r"Created API key 'default' \(shown once[^)]*\): (sk-[A-Za-z0-9_-]{43})")
GROUP_PROMPT = "a set of 3 stickers of a cat: sleeping, eating, playing"
Page = Any  # playwright.sync_api.Page


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A server with keys on: the page must ask for one."""
    live = start_server(tmp_path_factory.mktemp("playground"))
    match = KEY_LINE.search(live.log.read_text())
    assert match, live.log.read_text()
    yield live, match.group(1)
    stop_server(live)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if sync_api is None:
        pytest.skip("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser: Any, url: str, viewport: dict[str, int], key: str | None = None) -> Page:
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    page = context.new_page()
    if key is not None:  # a returning user: the key is remembered in this browser
        page.add_init_script(f"localStorage.setItem('seedream.apiKey', {json.dumps(key)})")
    page.goto(url)
    return page


def ready(page: Page) -> None:
    sync_api.expect(page.locator("#go")).to_be_enabled()


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    target = DOCS / name if os.environ.get("SEEDREAM_UPDATE_SCREENSHOTS") else tmp_path / name
    page.screenshot(path=str(target), full_page=True)
    return target


def generate(page: Page, prompt: str, *, tier: str = "1K", ratio: str = "Auto", group: str = "auto") -> None:
    page.fill("#prompt", prompt)
    page.locator("#tiers button", has_text=tier).click()
    page.locator("#ratios button", has_text=ratio).click()
    page.select_option("#group", group)
    page.click("#go")


def done(page: Page) -> str:
    status = page.locator("#status")
    sync_api.expect(status).to_contain_text("Done", timeout=60_000)
    return str(status.inner_text())


def png_b64(width: int, height: int, color: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# --- first screen ---------------------------------------------------------------------------


def test_first_screen_asks_for_a_key_and_remembers_it(server: tuple[LiveServer, str], browser: Any) -> None:
    live, key = server
    page = open_page(browser, live.url, DESKTOP)
    note = page.locator("#key-note")
    sync_api.expect(note).to_contain_text("needs an API key")
    text = page.locator("body").inner_text()
    assert "401" not in text and "AuthenticationError" not in text
    sync_api.expect(page.locator("#go")).to_be_disabled()
    # the key field comes first
    assert page.locator("#key").bounding_box()["y"] < page.locator("#prompt").bounding_box()["y"]
    page.fill("#key", "sk-wrong")
    page.locator("#key").dispatch_event("change")
    sync_api.expect(note).to_contain_text("not accepted")
    page.fill("#key", key)
    page.locator("#key").dispatch_event("change")
    ready(page)
    assert page.locator("#model option").count() == 5  # one preview model per Seedream profile
    page.reload()
    ready(page)
    assert page.input_value("#key") == key
    page.context.close()


def test_generate_waits_for_the_model_list(server: tuple[LiveServer, str], browser: Any) -> None:
    live, key = server
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.add_init_script(f"localStorage.setItem('seedream.apiKey', {json.dumps(key)})")
    held: list[Any] = []
    page.route("**/v1/models", lambda route: held.append(route))
    with page.expect_request("**/v1/models"):
        page.goto(live.url)
    sync_api.expect(page.locator("#models")).to_have_text("loading models…")  # the page waits for the list
    sync_api.expect(page.locator("#go")).to_be_disabled()
    assert len(held) == 1
    page.locator("#go").click(force=True)  # a click now sends nothing
    assert page.locator("#gallery figure").count() == 0
    held[0].continue_()
    ready(page)
    assert page.input_value("#model") == "doubao-seedream-4-0-250828"
    context.close()


# --- generating ----------------------------------------------------------------------------


def test_a_group_on_desktop(server: tuple[LiveServer, str], browser: Any, tmp_path: Path) -> None:
    live, key = server
    page = open_page(browser, live.url, DESKTOP, key)
    ready(page)
    page.fill("#seed", "42")
    generate(page, GROUP_PROMPT, tier="1K", ratio="16:9")
    assert "Done: 3 images" in done(page)
    cards = page.locator("#gallery figure.done")
    assert cards.count() == 3
    for i in range(3):
        figure = cards.nth(i)
        caption = figure.locator("figcaption").inner_text()
        assert f"#{i} · 1312x736" in caption and GROUP_PROMPT in caption and "seed: 42" in caption
        frame = figure.locator(".frame").bounding_box()
        assert abs(frame["width"] / frame["height"] - 1312 / 736) < 0.02  # the card has the image's shape
        natural = figure.locator("img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert natural == [1312, 736]
    assert page.locator("#gallery figure.pending").count() == 0
    screenshot(page, "playground-desktop.png", tmp_path)
    # one image: singular
    generate(page, "a red fox in snow", tier="1K", ratio="1:1", group="disabled")
    assert "Done: 1 image ·" in done(page)
    page.context.close()


def test_phone_layout(server: tuple[LiveServer, str], browser: Any, tmp_path: Path) -> None:
    live, key = server
    page = open_page(browser, live.url, PHONE, key)
    ready(page)
    generate(page, GROUP_PROMPT, tier="1K", ratio="3:4")
    done(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    form = page.locator("#form").bounding_box()
    gallery = page.locator("#gallery").bounding_box()
    assert gallery["y"] >= form["y"] + form["height"]  # one column: the gallery under the form
    assert gallery["x"] >= 0 and gallery["x"] + gallery["width"] <= PHONE["width"]
    first = page.locator("#gallery figure.done").first.bounding_box()
    assert first["width"] <= PHONE["width"] and first["height"] > first["width"]  # 3:4, portrait
    screenshot(page, "playground-phone.png", tmp_path)
    page.context.close()


def test_size_presets_follow_the_model(server: tuple[LiveServer, str], browser: Any) -> None:
    live, key = server
    page = open_page(browser, live.url, DESKTOP, key)
    ready(page)
    tiers = page.locator("#tiers button")
    assert tiers.all_inner_texts() == ["1K", "2K", "4K"]
    page.select_option("#model", "doubao-seedream-4-5-251128")
    assert tiers.all_inner_texts() == ["2K", "4K"]
    page.select_option("#model", "doubao-seedream-5-0-260128")
    assert tiers.all_inner_texts() == ["2K", "3K", "4K"]
    page.locator("#tiers button", has_text="3K").click()
    page.locator("#ratios button", has_text="16:9").click()
    sync_api.expect(page.locator("#resolved")).to_contain_text("4096 × 2304")
    table = page.evaluate("TIER_SIZES")
    assert table == {r: {t: f"{w}x{h}" for t, (w, h) in sizes.items()} for r, sizes in TIER_SIZES.items()}
    page.context.close()


def test_references_by_drop_paste_and_picker(server: tuple[LiveServer, str], browser: Any) -> None:
    live, key = server
    page = open_page(browser, live.url, DESKTOP, key)
    ready(page)
    script = """([b64, kind]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], kind + ".png", { type: "image/png" }));
        const init = { dataTransfer: dt, clipboardData: dt, bubbles: true };
        if (kind === "drop") document.getElementById("drop").dispatchEvent(new DragEvent("drop", init));
        else document.dispatchEvent(new ClipboardEvent("paste", init));
    }"""
    page.evaluate(script, [png_b64(320, 180, (200, 40, 40)), "drop"])
    page.evaluate(script, [png_b64(200, 200, (40, 200, 40)), "paste"])
    page.locator("#refs").set_input_files(
        files=[
            {"name": "picked.png", "mimeType": "image/png", "buffer": base64.b64decode(png_b64(90, 160, (0, 0, 200)))}
        ]
    )
    thumbs = page.locator("#thumbs .thumb")
    sync_api.expect(thumbs).to_have_count(3)
    assert [thumbs.nth(i).locator("img").get_attribute("alt") for i in range(3)] == [
        "reference 1: drop.png",
        "reference 2: paste.png",
        "reference 3: picked.png",
    ]
    page.get_by_role("button", name="Remove reference 2").click()
    page.get_by_role("button", name="Remove reference 2").click()
    sync_api.expect(thumbs).to_have_count(1)
    generate(page, "a poster", tier="1K", ratio="Auto", group="disabled")
    done(page)
    caption = page.locator("#gallery figure.done figcaption").inner_text()
    assert "1312x736" in caption  # 16:9 from the remaining (dropped) reference
    page.context.close()


def test_cancel_stops_the_job_on_the_server(server: tuple[LiveServer, str], browser: Any) -> None:
    live, key = server
    page = open_page(browser, live.url, DESKTOP, key)
    ready(page)
    page.fill("#max", "15")
    # the user presses Cancel as soon as the first image shows (the preview engine is quick: a human would be late)
    page.evaluate("""() => new MutationObserver((_, observer) => {
        if (!document.querySelector("#gallery figure.done")) return;
        observer.disconnect();
        document.getElementById("cancel").click();
    }).observe(document.getElementById("gallery"), { childList: true, subtree: true, attributes: true })""")
    generate(page, "a set of 15 posters of the seasons", tier="4K", ratio="1:1")
    status = page.locator("#status")
    sync_api.expect(status).to_contain_text("Cancelled")
    sync_api.expect(page.locator("#gallery figure.pending")).to_have_count(0)
    ready(page)
    request_id = re.search(r"Request id (\w+)", status.inner_text())
    assert request_id, status.inner_text()

    def closed_row() -> Any:
        store = AccountStore.open(live.data_dir)
        try:
            rows = [r for r in store.usage_records() if r.request_id == request_id.group(1)]
        finally:
            store.close()
        return rows[0] if rows and rows[0].status != "running" else None

    row = wait_until(closed_row, "the cancelled job's ledger row was closed")
    assert row.status == "cancelled" and 1 <= row.images < 15
    page.context.close()


def test_download_one_and_all(server: tuple[LiveServer, str], browser: Any, tmp_path: Path) -> None:
    live, key = server
    page = open_page(browser, live.url, DESKTOP, key)
    ready(page)
    generate(page, GROUP_PROMPT, tier="1K", ratio="1:1")
    done(page)
    with page.expect_download() as one:
        page.locator("#gallery figure.done a[download]").first.click()
    path = tmp_path / one.value.suggested_filename
    one.value.save_as(path)
    assert re.fullmatch(r"seedream-\w{8}-0\.jpeg", path.name)
    assert Image.open(path).size == (1024, 1024)
    names: list[str] = []
    page.on("download", lambda download: names.append(download.suggested_filename))
    page.click("#download-all")
    while len(names) < 3:  # each wait lets Playwright deliver the events that arrived
        page.wait_for_event("download")
    assert sorted(name[-6:] for name in names) == ["0.jpeg", "1.jpeg", "2.jpeg"]
    page.context.close()


def test_request_as_code_runs(server: tuple[LiveServer, str], browser: Any) -> None:
    live, key = server
    page = open_page(browser, live.url, DESKTOP, key)
    ready(page)
    page.fill("#prompt", "a lighthouse at dusk")
    page.locator("#tiers button", has_text="1K").click()
    page.select_option("#group", "disabled")
    page.fill("#seed", "7")
    page.click("#show-code")
    curl = page.locator("#snippet").inner_text()
    page.locator("#code [data-lang=python]").click()
    python = page.locator("#snippet").inner_text()
    page.context.close()
    env = {**os.environ, "KEY": key}
    assert '"seed":7' in curl and "Bearer $KEY" in curl
    if shutil.which("curl"):
        result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, env=env, timeout=60)
        assert "image_generation.completed" in result.stdout, result
    result = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "image_generation.partial_succeeded 0 http://127.0.0.1" in result.stdout
    assert "image_generation.completed" in result.stdout


# --- /docs works offline ----------------------------------------------------------------------


def test_docs_reference_only_local_assets(live_server: LiveServer) -> None:
    page = httpx.get(f"{live_server.url}/docs", timeout=30)
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    assert "cdn" not in page.text.lower()
    for asset in assets:
        response = httpx.get(f"{live_server.url}{asset}", timeout=30)
        assert response.status_code == 200 and len(response.content) > 100, asset
    redoc = httpx.get(f"{live_server.url}/redoc", timeout=30).text
    assert "cdn" not in redoc.lower() and "fonts.googleapis" not in redoc


def test_docs_render_with_no_way_out(live_server: LiveServer, browser: Any) -> None:
    """Swagger UI renders the API with every request off loopback refused."""
    context = browser.new_context(viewport=DESKTOP)
    outside: list[str] = []

    def gate(route: Any) -> None:
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    page.goto(f"{live_server.url}/docs")
    sync_api.expect(page.locator(".swagger-ui .info .title")).to_contain_text("seedream-server")
    sync_api.expect(page.locator(".opblock-summary-path").first).to_be_visible()
    assert outside == []
    context.close()
