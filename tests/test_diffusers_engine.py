"""The diffusers engine on tiny random-weight pipelines, served through the real config path.

Tiny SDXL, SD, FLUX.1, FLUX.1 Kontext, FLUX.2 klein, Qwen-Image and Qwen-Image-Edit Plus pipelines are built offline
(``tests/tiny_pipelines.py``), saved with ``save_pretrained``, declared in a TOML ``[[models]]`` file and
served by ``create_app(load_settings(config))``. Most tests drive the app in process (httpx ASGI
transport); streaming order and client disconnects are checked on a real socket (uvicorn in a thread
of this process, so the engine's counters can be read).

The module is skipped when the optional ``diffusers`` extra is not installed.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
from fastapi import FastAPI
from PIL import Image

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_pipelines  # noqa: E402  (after the skip: it imports torch)
from conftest import free_port  # noqa: E402
from seedream_server.config import load_settings  # noqa: E402
from seedream_server.engines.base import ImageJob, ImageTask  # noqa: E402
from seedream_server.engines.diffusers import (  # noqa: E402
    OPTIONS,
    DiffusersEngine,
    DiffusersOptions,
    ModelSetupError,
    detect,
    native_size,
)
from seedream_server.engines.diffusers.families import group_references  # noqa: E402
from seedream_server.errors import EngineError  # noqa: E402
from seedream_server.http import create_app  # noqa: E402
from support import GENERATIONS, iter_sse, served_metric, sse_events, wait_until  # noqa: E402

torch.set_num_threads(2)
module_loop = pytest.mark.asyncio(loop_scope="module")  # one app and loop for the module

# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny pipeline, built once per session."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: build(root / name) for name, build in tiny_pipelines.BUILDERS.items()}


def toml_string(value: str) -> str:
    return json.dumps(value)


def write_config(path: Path, data_dir: Path, models: list[dict[str, Any]]) -> Path:
    lines = ["[server]", f"data_dir = {toml_string(str(data_dir))}", "auth = false", "max_concurrency = 8", ""]
    for model in models:
        lines.append("[[models]]")
        for key, value in model.items():
            if isinstance(value, str):
                lines.append(f"{key} = {toml_string(value)}")
            elif isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            else:
                lines.append(f"{key} = {value}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def served_models(tiny: dict[str, Path]) -> list[dict[str, Any]]:
    small = 64 * 64
    return [
        {"name": "tiny-sdxl", "engine": "diffusers", "source": str(tiny["sdxl"]), "steps": 2},
        {
            "name": "tiny-sdxl-batch",
            "engine": "diffusers",
            "source": str(tiny["sdxl"]),
            "steps": 2,
            "max_batch_size": 8,
            "batch_window_ms": 300,
        },
        {"name": "tiny-sd", "engine": "diffusers", "source": str(tiny["sd"]), "steps": 2},
        {
            "name": "tiny-klein",
            "engine": "diffusers",
            "source": str(tiny["flux2-klein"]),
            "steps": 2,
            "native_pixels": small,
        },
        {
            "name": "tiny-flux1",
            "engine": "diffusers",
            "source": str(tiny["flux1"]),
            # 4, not 2: FLUX.1 img2img starts at step int(steps x (1 - strength)), which is 0 (pure noise, the
            # reference ignored) for 2 steps at the default strength 0.7
            "steps": 4,
            "native_pixels": small,
        },
        {
            "name": "tiny-kontext",
            "engine": "diffusers",
            "source": str(tiny["flux-kontext"]),
            "steps": 2,
            "native_pixels": small,
        },
        {
            "name": "tiny-qwen-image",
            "engine": "diffusers",
            "source": str(tiny["qwen-image"]),
            "steps": 2,
            "native_pixels": small,
        },
        {
            "name": "tiny-qwen-edit",
            "engine": "diffusers",
            "source": str(tiny["qwen-image-edit-plus"]),
            "steps": 2,
            "native_pixels": small,
            "guidance_scale": 1.0,
        },
    ]


@pytest.fixture(scope="module")
def config_file(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("diffusers-config")
    return write_config(tmp / "seedream.toml", tmp / "data", served_models(tiny_models))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(config_file: Path) -> AsyncIterator[FastAPI]:
    application = create_app(load_settings(config_file, environ={}))
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000", timeout=120) as c:
        yield c


def engine_of(app: FastAPI, name: str) -> DiffusersEngine:
    engine = app.state.service.models.resolve(name).engine
    assert isinstance(engine, DiffusersEngine)
    return engine


class ThreadServer:
    """uvicorn serving an app on a loopback port from a thread of this process."""

    def __init__(self, app: FastAPI) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), "the server thread started serving")
        if not self.server.started:
            raise RuntimeError("the server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)


@pytest.fixture(scope="module")
def live(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    tmp = tmp_path_factory.mktemp("diffusers-live")
    models = [
        {
            "name": "tiny-klein",
            "engine": "diffusers",
            "source": str(tiny_models["flux2-klein"]),
            "steps": 2,
            "native_pixels": 64 * 64,
        },
        {
            "name": "tiny-klein-slow",
            "engine": "diffusers",
            "source": str(tiny_models["flux2-klein"]),
            "steps": 40,
            "native_pixels": 64 * 64,
        },
    ]
    config = write_config(tmp / "seedream.toml", tmp / "data", models)
    with ThreadServer(create_app(load_settings(config, environ={}))) as server:
        yield server


# --- helpers ------------------------------------------------------------------------------------


def data_uri(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> str:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, 0, size[0] // 2, size[1] // 2))
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def pixels(item: dict[str, Any]) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    return np.asarray(image.convert("RGB"), dtype=np.float32)


async def generate(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    payload = {"response_format": "b64_json", "watermark": False, "size": "1K", **body}
    return await client.post(GENERATIONS, json=payload)


# --- pure parts -----------------------------------------------------------------------------------


def test_native_size_keeps_aspect_and_multiple() -> None:
    assert native_size(2048, 2048, 1024 * 1024, 16) == (1024, 1024)
    w, h = native_size(2848, 1600, 1024 * 1024, 16)
    assert (w % 16, h % 16) == (0, 0)
    assert abs(w / h - 2848 / 1600) < 0.03
    assert abs(w * h - 1024 * 1024) / (1024 * 1024) < 0.05
    assert native_size(1280, 720, 64 * 64, 16) == (80, 48)
    assert native_size(100, 1600, 64 * 64, 16) == (16, 256)


def test_group_references_keep_user_refs_then_anchor_and_latest() -> None:
    assert group_references(["u"], [], 3) == ["u"]
    assert group_references(["u"], ["a", "b"], 3) == ["u", "a", "b"]
    assert group_references(["u"], ["a", "b", "c", "d"], 3) == ["u", "a", "d"]
    assert group_references(["u"], ["a", "b", "c", "d"], 4) == ["u", "a", "c", "d"]
    assert group_references(["u", "v", "w"], ["a"], 3) == ["u", "v", "w"]


def test_detect_families_from_model_index(tiny_models: dict[str, Path]) -> None:
    found = {name: detect(path) for name, path in tiny_models.items()}
    assert {name: info.family.name for name, info in found.items()} == {
        "sdxl": "sdxl",
        "sd": "sd",
        "flux1": "flux",
        "flux-kontext": "flux-kontext",
        "flux2-klein": "flux2-klein",
        "qwen-image": "qwen-image",
        "qwen-image-edit-plus": "qwen-image-edit-plus",
    }
    assert found["sdxl"].native_pixels == 64 * 64  # UNet sample size 8 x VAE factor 8
    assert found["flux2-klein"].distilled and found["flux2-klein"].steps == 4
    assert found["qwen-image-edit-plus"].family.max_references == 3
    assert found["flux2-klein"].family.max_references == 10
    # the tiny FLUX.1 has a guidance embedding (dev-like), so it is not taken for schnell
    assert not found["flux1"].distilled and found["flux1"].steps == 28
    assert found["flux1"].family.reference_mode == "img2img"
    assert found["flux-kontext"].family.reference_mode == "single"
    assert found["flux-kontext"].family.max_references == 1


def test_options_are_checked() -> None:
    with pytest.raises(ModelSetupError, match="unknown option"):
        DiffusersOptions.parse("m", {"source": "x/y", "stpes": 4})
    with pytest.raises(ModelSetupError, match="'steps' must be"):
        DiffusersOptions.parse("m", {"source": "x/y", "steps": "4"})
    with pytest.raises(ModelSetupError, match="'source'"):
        DiffusersOptions.parse("m", {})
    options = DiffusersOptions.parse("m", {"source": "x/y", "dtype": "bf16", "guidance_scale": 3})
    assert options.dtype == "bfloat16" and options.guidance_scale == 3.0


def render_options() -> str:
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {kind} | {default} | {text} |" for name, kind, default, text in OPTIONS]
    return "\n".join(rows)


def test_every_option_is_documented() -> None:
    assert [row[0] for row in OPTIONS] == [f.name for f in fields(DiffusersOptions)]
    doc = (Path(__file__).resolve().parent.parent / "docs" / "engines.md").read_text(encoding="utf-8")
    start = doc.index("<!-- options:start")
    start = doc.index("\n", start) + 1
    end = doc.index("<!-- options:end -->")
    assert doc[start:end].strip() == render_options()


# --- start-up errors ------------------------------------------------------------------------------


def test_missing_model_dir_is_a_clear_start_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    config = write_config(
        tmp_path / "c.toml", tmp_path / "data", [{"name": "m", "engine": "diffusers", "source": str(missing)}]
    )
    with pytest.raises(ModelSetupError, match=r"model directory .*no-such-model.* does not exist"):
        create_app(load_settings(config, environ={}))
    # and through the command line: the server exits with the reason
    result = subprocess.run(
        [sys.executable, "-m", "seedream_server.cli", "serve", "--config", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr


def test_directory_without_model_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSetupError, match=r"no model_index\.json"):
        DiffusersEngine.from_options("m", {"source": str(tmp_path / "empty")})


def test_max_references_above_the_family_limit_is_refused(tiny_models: dict[str, Path]) -> None:
    options = {"source": str(tiny_models["qwen-image-edit-plus"]), "max_references": 5}
    with pytest.raises(ModelSetupError, match="at most 3"):
        DiffusersEngine.from_options("m", options)


def test_without_the_extra_the_engine_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tiny_models: dict[str, Path]
) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the extra were not installed
    with pytest.raises(ModelSetupError, match=r"pip install 'seedream-server\[diffusers\]'"):
        DiffusersEngine.from_options("m", {"source": str(tiny_models["sdxl"])})


WITHOUT_EXTRA = """
import sys
for name in ("torch", "diffusers", "transformers"):
    sys.modules[name] = None  # as if the diffusers extra were not installed
import seedream_server.engines.diffusers  # importable without the extra
from seedream_server.http import create_app
from dataclasses import replace
from seedream_server.config import ModelConfig, load_settings
settings = load_settings(overrides={"data_dir": sys.argv[1], "auth": False}, environ={})
create_app(settings)  # the preview server starts
settings = replace(settings, models=(ModelConfig("m", "diffusers", (), {"source": "a/b"}),))
try:
    create_app(settings)
except Exception as exc:
    print(type(exc).__name__, exc)
assert "torch" not in [name for name, module in sys.modules.items() if module is not None]
"""


def test_the_server_starts_without_the_extra_and_a_diffusers_model_says_what_to_install(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, str(tmp_path / "data")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "ModelSetupError" in result.stdout
    assert "pip install 'seedream-server[diffusers]'" in result.stdout


@module_loop
async def test_hub_id_not_in_cache_fails_at_start_without_download(tmp_path: Path) -> None:
    engine = DiffusersEngine.from_options("m", {"source": "seedream-tests/not-a-cached-model"})
    with pytest.raises(ModelSetupError, match="allow_download"):
        await engine.start()
    await engine.aclose()


# --- generation over HTTP -------------------------------------------------------------------------


@module_loop
async def test_models_are_listed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    ids = {m["id"] for m in response.json()["data"]}
    assert {"tiny-sdxl", "tiny-klein", "tiny-qwen-edit"} <= ids


@pytest.mark.parametrize("model", ["tiny-sdxl", "tiny-sd", "tiny-flux1", "tiny-klein", "tiny-qwen-image"])
@module_loop
async def test_text_to_image_delivers_the_exact_size(client: httpx.AsyncClient, app: FastAPI, model: str) -> None:
    engine = engine_of(app, model)
    before = engine.stats.images
    response = await generate(client, model=model, prompt="a red fox in snow", size="1280x720", seed=7)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"][0]["size"] == "1280x720"
    assert pixels(body["data"][0]).shape == (720, 1280, 3)
    assert body["usage"]["generated_images"] == 1
    assert engine.stats.images == before + 1
    # the step callback's progress reaches the metrics
    metrics = (await client.get("/metrics")).text
    assert re.search(rf'seedream_denoise_steps_total{{model="{model}"}} [1-9]', metrics), metrics
    # generated at the model's native budget (64x64 for these tiny models) with the delivered aspect
    assert engine.generation_size(1280, 720) == (80, 48)


@module_loop
async def test_same_seed_same_image_other_seed_other_image(client: httpx.AsyncClient) -> None:
    first, again, other = [
        pixels((await generate(client, model="tiny-sdxl", prompt="a lighthouse", seed=s)).json()["data"][0])
        for s in (11, 11, 12)
    ]
    assert np.abs(first - again).mean() < 0.5
    assert np.abs(first - other).mean() > 2


@module_loop
async def test_one_reference_runs_img2img(client: httpx.AsyncClient, app: FastAPI) -> None:
    engine = engine_of(app, "tiny-sdxl")
    before = engine.stats.references
    outputs = []
    for color in ((250, 30, 30), (30, 30, 250)):
        response = await generate(client, model="tiny-sdxl", prompt="make it a painting", image=data_uri(color), seed=3)
        assert response.status_code == 200, response.text
        outputs.append(pixels(response.json()["data"][0]))
    assert engine.stats.references == before + 2
    assert np.abs(outputs[0] - outputs[1]).mean() > 2  # the reference shapes the result


@pytest.mark.parametrize("model", ["tiny-flux1", "tiny-kontext"])
@module_loop
async def test_one_reference_on_flux1_img2img_and_kontext_edit(
    client: httpx.AsyncClient, app: FastAPI, model: str
) -> None:
    engine = engine_of(app, model)
    before = engine.stats.references
    outputs = []
    for color in ((250, 30, 30), (30, 30, 250), (250, 30, 30)):
        response = await generate(
            client, model=model, prompt="make it a painting", image=data_uri(color), size="1280x720", seed=3
        )
        assert response.status_code == 200, response.text
        item = response.json()["data"][0]
        assert item["size"] == "1280x720"
        outputs.append(pixels(item))
    assert outputs[0].shape == (720, 1280, 3)
    assert engine.stats.references == before + 3
    # same prompt and seed: the same reference gives the same image, another reference another one (random
    # tiny weights at 64x64 let a reference move pixels by about 1 level on average: enough to tell apart)
    assert np.abs(outputs[0] - outputs[2]).mean() < 0.1
    assert np.abs(outputs[0] - outputs[1]).mean() > 0.5


@pytest.mark.parametrize(("model", "count"), [("tiny-klein", 3), ("tiny-qwen-edit", 2)])
@module_loop
async def test_several_references(client: httpx.AsyncClient, app: FastAPI, model: str, count: int) -> None:
    engine = engine_of(app, model)
    before = engine.stats.references
    images = [data_uri((40 * i, 200 - 30 * i, 90), (64 + 16 * i, 64)) for i in range(count)]
    response = await generate(client, model=model, prompt="put them together", image=images, seed=5)
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["size"] == "1024x1024"
    assert engine.stats.references == before + count


@pytest.mark.parametrize(
    ("model", "limit"),
    [("tiny-qwen-edit", 3), ("tiny-sdxl", 1), ("tiny-qwen-image", 1), ("tiny-flux1", 1), ("tiny-kontext", 1)],
)
@module_loop
async def test_too_many_references_is_a_400_naming_the_limit(client: httpx.AsyncClient, model: str, limit: int) -> None:
    images = [data_uri((10 * i, 100, 100)) for i in range(limit + 1)]
    response = await generate(client, model=model, prompt="combine", image=images)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "image"
    assert f"at most {limit}" in error["message"]


@module_loop
async def test_group_of_four_streams_in_order_and_feeds_outputs_forward(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    engine = engine_of(app, "tiny-klein")
    before_calls, before_refs = engine.stats.pipeline_calls, engine.stats.references
    response = await generate(
        client,
        model="tiny-klein",
        prompt="a set of four images of a lighthouse: morning, noon, evening and night",
        sequential_image_generation="auto",
        stream=True,
        seed=21,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [name for name, _ in events]
    assert kinds[:4] == ["image_generation.partial_succeeded"] * 4
    assert kinds[4] == "image_generation.completed"
    assert events[-1][1] == "[DONE]"
    assert [json.loads(data)["image_index"] for _, data in events[:4]] == [0, 1, 2, 3]
    assert engine.stats.pipeline_calls == before_calls + 4
    # image i had the i earlier outputs of its group as references: 0 + 1 + 2 + 3
    assert engine.stats.references == before_refs + 6


@module_loop
async def test_concurrent_requests_are_batched_and_routed_back(client: httpx.AsyncClient, app: FastAPI) -> None:
    engine = engine_of(app, "tiny-sdxl-batch")
    calls, images = engine.stats.pipeline_calls, engine.stats.images
    seeds = [101, 102, 103, 104]
    responses = await asyncio.gather(
        *(generate(client, model="tiny-sdxl-batch", prompt=f"a cat number {s}", seed=s) for s in seeds)
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert engine.stats.images == images + 4
    assert engine.stats.pipeline_calls - calls < 4  # at least two of them shared a call
    assert engine.stats.largest_batch >= 2
    # each request got its own image: the same prompt and seed alone matches its batched twin best
    batched = [pixels(r.json()["data"][0]) for r in responses]
    alone = pixels(
        (await generate(client, model="tiny-sdxl-batch", prompt="a cat number 103", seed=103)).json()["data"][0]
    )
    distances = [float(np.abs(alone - b).mean()) for b in batched]
    assert int(np.argmin(distances)) == 2
    assert distances[2] < 1.0


@module_loop
async def test_fast_mode_uses_fewer_steps(client: httpx.AsyncClient, app: FastAPI) -> None:
    engine = engine_of(app, "tiny-sd")
    before = engine.stats.steps
    response = await generate(
        client, model="tiny-sd", prompt="a boat", seed=1, optimize_prompt_options={"mode": "fast"}
    )
    assert response.status_code == 200, response.text
    assert engine.stats.steps == before + 1  # 2 steps configured, fast mode halves them


# --- a real socket: streaming and disconnects -------------------------------------------------------


def test_stream_over_a_socket_sends_each_image_as_it_is_ready(live: ThreadServer) -> None:
    body = {
        "model": "tiny-klein",
        "prompt": "生成3张 海边的灯塔",
        "sequential_image_generation": "auto",
        "stream": True,
        "size": "1K",
        "response_format": "url",
    }
    with httpx.stream("POST", live.url + GENERATIONS, json=body, timeout=120) as response:
        assert response.status_code == 200
        kinds = [event.event for event in iter_sse(response) if event.event is not None]
    assert kinds == ["image_generation.partial_succeeded"] * 3 + ["image_generation.completed"]


def test_closing_the_stream_cancels_the_rest_between_steps(live: ThreadServer) -> None:
    engine = engine_of(live.app, "tiny-klein-slow")
    stats = engine.stats
    before_images, before_steps = stats.images, stats.steps
    requested, steps = 6, 40
    body = {
        "model": "tiny-klein-slow",
        "prompt": "生成6张 一组城市夜景",
        "sequential_image_generation": "auto",
        "stream": True,
        "size": "1K",
        "response_format": "url",
    }
    cancelled = {"model": "tiny-klein-slow", "status": "cancelled"}
    cancelled_before = served_metric(live.url, "seedream_requests_total", **cancelled)
    with httpx.stream("POST", live.url + GENERATIONS, json=body, timeout=120) as response:
        assert response.status_code == 200
        first = next(iter_sse(response))  # leave after the first image: the connection closes
        assert first.event == "image_generation.partial_succeeded"
    # the server counts the job as cancelled once its engine generator is closed: nothing more is submitted
    wait_until(
        lambda: served_metric(live.url, "seedream_requests_total", **cancelled) > cancelled_before,
        "the job was counted as cancelled",
    )
    # the device's worker runs one call at a time, in order: once a request queued after the interrupted
    # call is answered, that call has ended and the counters are final
    barrier = {"model": "tiny-klein", "prompt": "a lighthouse", "size": "1K", "response_format": "b64_json"}
    assert httpx.post(live.url + GENERATIONS, json=barrier, timeout=120).status_code == 200
    made = stats.images - before_images
    ran = stats.steps - before_steps
    assert 1 <= made < requested
    assert ran < requested * steps  # typically 41: the second image stopped after its first step


# --- the engine on its own: shutdown ------------------------------------------------------------


@module_loop
async def test_shutdown_stops_a_running_group_between_steps(tiny_models: dict[str, Path]) -> None:
    options = {"source": str(tiny_models["flux2-klein"]), "steps": 40, "native_pixels": 64 * 64}
    engine = DiffusersEngine.from_options("slow", options)
    await engine.start()
    tasks = tuple(ImageTask(index=i, prompt=f"city at night {i}", seed=i) for i in range(4))
    job = ImageJob(model="slow", tasks=tasks, width=1024, height=1024, group=True, request_id="shutdown")
    results = engine.generate(job)
    first = await anext(results)
    assert first.index == 0 and first.image is not None
    closing = asyncio.create_task(engine.aclose())
    with pytest.raises(EngineError, match="shutting down"):
        await anext(results)
    await closing
    await results.aclose()
    assert engine.stats.images == 1
    assert engine.stats.steps < 2 * 40
    assert engine.stats.interrupted_calls + engine.stats.cancelled_images >= 1


def test_model_source_shorthand_serves_one_diffusers_model(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from conftest import start_server, stop_server
    from seedream_server.config import DEFAULT_ALIASES, DEFAULT_MODEL, load_settings

    settings = load_settings(overrides={"model_source": str(tiny_models["sdxl"])}, environ={})
    assert [(m.name, m.engine, m.aliases, m.options) for m in settings.models] == [
        (DEFAULT_MODEL, "diffusers", DEFAULT_ALIASES, {"source": str(tiny_models["sdxl"])})
    ]
    named = load_settings(overrides={"model_source": "x", "model_name": "sdxl"}, environ={})
    assert [(m.name, m.aliases) for m in named.models] == [("sdxl", ())]
    config = tmp_path / "c.toml"
    config.write_text('[[models]]\nname = "a"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="cannot be combined"):
        load_settings(config, overrides={"model_source": "x"}, environ={})

    server = start_server(tmp_path, "--no-auth", "--model-source", str(tiny_models["sdxl"]))
    try:
        models = httpx.get(f"{server.url}/v1/models").json()["data"]
        assert [(m["id"], m["engine"]) for m in models] == [(DEFAULT_MODEL, "diffusers")]
    finally:
        stop_server(server)
