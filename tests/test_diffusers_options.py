"""The diffusers engine's speed options on tiny random-weight pipelines (CPU): each one loads and runs where it
applies, and is refused at start-up in one line where it cannot (family, model, installed packages) - never on
a request. Also FLUX.2 klein's KV variant (``Flux2KleinKVPipeline``) for groups.

Quantization runs where torchao / bitsandbytes are installed and is checked to be refused clearly where not.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

import tiny_pipelines  # noqa: E402  (after the skip: it imports torch)
from seedream_server.engines.base import ImageJob, ImageTask  # noqa: E402
from seedream_server.engines.diffusers import DiffusersEngine, DiffusersOptions, ModelSetupError, detect  # noqa: E402

torch.set_num_threads(2)
SMALL = 64 * 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-speed")
    built = {
        name: tiny_pipelines.BUILDERS[name](root / name)
        for name in ("sdxl", "flux1", "flux2-klein", "qwen-image", "qwen-image-edit-plus")
    }
    built["flux2-klein-kv"] = build_flux2_klein_kv(root / "flux2-klein-kv")
    built["taesd"] = build_tiny_autoencoder(root / "taesd")
    return built


def build_flux2_klein_kv(path: Path) -> Path:
    """The tiny klein pipeline's components saved as ``Flux2KleinKVPipeline`` (klein's KV variant)."""
    from diffusers import Flux2KleinKVPipeline, Flux2KleinPipeline

    source = tiny_pipelines.build_flux2_klein(path.parent / "klein-for-kv")
    plain = Flux2KleinPipeline.from_pretrained(str(source))
    kv = Flux2KleinKVPipeline(**{k: v for k, v in plain.components.items()})
    path.mkdir(parents=True, exist_ok=True)
    kv.save_pretrained(str(path))
    return path


def build_tiny_autoencoder(path: Path) -> Path:
    """A random-weight AutoencoderTiny with SD's 4 latent channels and factor 8 (taesd's layout, small)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    vae.save_pretrained(str(path))
    return path


async def started(source: Path, **options: Any) -> DiffusersEngine:
    engine = DiffusersEngine.from_options("m", {"source": str(source), "steps": 4, "native_pixels": SMALL, **options})
    await engine.start()
    return engine


async def draw(engine: DiffusersEngine, seed: int = 7, count: int = 1, fast: bool = False) -> list[np.ndarray]:
    tasks = tuple(ImageTask(index=i, prompt=f"a red cube {i}", seed=seed + i) for i in range(count))
    job = ImageJob(model="m", tasks=tasks, width=64, height=64, request_id="t", fast=fast)
    return [np.asarray(result.image, dtype=np.float32) async for result in engine.generate(job) if result.image]


async def refusal(source: Path, **options: Any) -> str:
    with pytest.raises(ModelSetupError) as caught:
        engine = await started(source, **options)
        await engine.aclose()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model 'm': ")
    return message


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- option parsing (no torch needed) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"cache": "teacache"}, "'cache' must be none, first-block"),
        ({"compile": "max"}, "'compile' must be none, regional or full"),
        ({"quantization": "int4"}, "'quantization' must be none, int8wo"),
        ({"vae": "tiled,tiny"}, "'vae' must be"),
        ({"vae": "tiny"}, "vae = 'tiny' needs tiny_vae_source"),
        ({"tiny_vae_source": "/x"}, "tiny_vae_source is set but vae is 'none'"),
        ({"cache_threshold": 0.1}, "cache_threshold is set but cache is 'none'"),
        ({"cache": "taylorseer", "cache_threshold": 0.1}, "cache_threshold does not apply to cache = 'taylorseer'"),
        ({"cache": "magcache", "cache_mag_ratios": "1.0,x"}, "'cache_mag_ratios' must be comma-separated"),
        ({"warmup_sizes": "1024"}, "'warmup_sizes' must be comma-separated WxH"),
        ({"offload": "disk"}, "'offload' must be none, model, sequential or group"),
    ],
)
def test_speed_options_are_checked_when_parsed(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ModelSetupError, match=error.replace("(", r"\(")):
        DiffusersOptions.parse("m", {"source": "x/y", **options})


def test_speed_options_parse() -> None:
    options = DiffusersOptions.parse(
        "m",
        {
            "source": "x/y",
            "cache": "magcache",
            "cache_threshold": 0.1,
            "cache_mag_ratios": "1.0, 0.98,0.9",
            "compile": "regional",
            "warmup_sizes": "1024x1024, 1360x768",
            "channels_last": True,
        },
    )
    assert options.mag_ratios == (1.0, 0.98, 0.9)
    assert options.warmup == ((1024, 1024), (1360, 768))
    assert options.speed == {"cache": "magcache", "compile": "regional", "channels_last": True}
    assert DiffusersOptions.parse("m", {"source": "x/y"}).speed == {}


# -- caches ---------------------------------------------------------------------------------------------


def test_first_block_cache_on_flux2_klein_is_refused_at_start_in_one_line(tiny: dict[str, Path]) -> None:
    # diffusers 0.42.1: FBCHeadBlockHook subtracts a list from a tensor on Flux2's blocks at the second step
    message = run(refusal(tiny["flux2-klein"], cache="first-block"))
    assert "cache = 'first-block' does not run on FLUX.2 [klein]" in message
    assert "start-up probe failed with TypeError: unsupported operand type(s) for -: 'Tensor' and 'list'" in message


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("flux2-klein", {"cache": "taylorseer", "cache_interval": 2, "cache_warmup_steps": 1}),
        ("flux2-klein", {"cache": "faster"}),
        ("flux2-klein", {"cache": "magcache", "cache_mag_ratios": "1.0,0.95,0.9,0.9"}),
        ("flux1", {"cache": "first-block", "cache_threshold": 0.2}),
        ("flux1", {"cache": "magcache"}),  # diffusers' FLUX.1 ratios
        ("qwen-image", {"cache": "taylorseer"}),
    ],
)
def test_cache_methods_load_and_run(tiny: dict[str, Path], family: str, options: dict[str, Any]) -> None:
    async def go() -> None:
        engine = await started(tiny[family], steps=6, **options)
        try:
            first = await draw(engine)
            again = await draw(engine)  # the cache's state was reset between calls: same seed, same image
            assert first[0].shape == (64, 64, 3)
            np.testing.assert_array_equal(first[0], again[0])
            await draw(engine, fast=True)  # other step counts (MagCache is rebuilt for them)
            assert engine.stats.images == 3
        finally:
            await engine.aclose()

    run(go())


def test_magcache_without_ratios_is_refused_where_diffusers_has_none(tiny: dict[str, Path]) -> None:
    message = run(refusal(tiny["flux2-klein"], cache="magcache"))
    assert "needs cache_mag_ratios for FLUX.2 [klein]" in message


def test_cache_on_a_unet_family_is_refused(tiny: dict[str, Path]) -> None:
    message = run(refusal(tiny["sdxl"], cache="taylorseer"))
    assert "needs a transformer with diffusers' cache hooks" in message and "UNet2DConditionModel" in message


# -- attention, VAE, memory layout, offload ----------------------------------------------------------


def test_attention_backend_native_math_runs_and_missing_kernels_are_refused(tiny: dict[str, Path]) -> None:
    async def go() -> None:
        engine = await started(tiny["flux2-klein"], attention_backend="_native_math")
        try:
            assert len(await draw(engine)) == 1
        finally:
            await engine.aclose()

    run(go())
    if importlib.util.find_spec("flash_attn") is None:
        assert "Please install `flash-attn" in run(refusal(tiny["flux2-klein"], attention_backend="flash"))
    assert "must be one of the following" in run(refusal(tiny["sdxl"], attention_backend="fastest"))


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("sdxl", {"vae": "tiled,sliced", "channels_last": True}),
        ("qwen-image", {"vae": "tiled"}),
        ("flux2-klein", {"vae": "sliced", "channels_last": True}),
        ("flux2-klein", {"offload": "group"}),
    ],
)
def test_vae_channels_last_and_group_offload_run(tiny: dict[str, Path], family: str, options: dict[str, Any]) -> None:
    async def go() -> None:
        engine = await started(tiny[family], **options)
        try:
            assert len(await draw(engine, count=2)) == 2
        finally:
            await engine.aclose()

    run(go())


def test_tiny_vae_replaces_the_vae_where_the_family_has_one(tiny: dict[str, Path]) -> None:
    async def go() -> None:
        engine = await started(tiny["sdxl"], vae="tiny", tiny_vae_source=str(tiny["taesd"]))
        try:
            assert engine._runner is not None and type(engine._runner.pipe.vae).__name__ == "AutoencoderTiny"
            assert len(await draw(engine)) == 1
        finally:
            await engine.aclose()

    run(go())
    message = run(refusal(tiny["flux2-klein"], vae="tiny", tiny_vae_source=str(tiny["taesd"])))
    assert "vae = 'tiny' is not available for FLUX.2 [klein]" in message


def test_channels_last_on_a_3d_vae_is_refused(tiny: dict[str, Path]) -> None:
    message = run(refusal(tiny["qwen-image"], channels_last=True))
    assert "channels_last does not apply to Qwen-Image's vae (AutoencoderKLQwenImage)" in message


# -- quantization -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["int8wo", "fp8wo"])
def test_torchao_quantization_runs_or_is_refused_without_torchao(tiny: dict[str, Path], method: str) -> None:
    if importlib.util.find_spec("torchao") is None:
        message = run(refusal(tiny["flux2-klein"], quantization=method))
        assert f"quantization = '{method}' needs torchao >= 0.15, which is not installed (pip install torchao)" in (
            message
        )
        return

    async def go() -> None:
        engine = await started(tiny["flux2-klein"], quantization=method)
        try:
            assert len(await draw(engine)) == 1
        finally:
            await engine.aclose()

    run(go())


def test_nf4_is_refused_without_bitsandbytes(tiny: dict[str, Path]) -> None:
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    message = run(refusal(tiny["sdxl"], quantization="nf4"))
    assert "needs bitsandbytes, which is not installed" in message


# -- compilation ------------------------------------------------------------------------------------


def test_regional_compile_is_warmed_up_at_start_and_requests_do_not_recompile(tiny: dict[str, Path]) -> None:
    from torch._dynamo.utils import counters

    async def go() -> None:
        engine = await started(tiny["flux2-klein"], compile="regional", steps=2, max_batch_size=2)
        try:
            assert engine._runner is not None and len(engine._runner.warmup_seconds) == 2  # one image, a batch of 2
            graphs = counters["stats"]["unique_graphs"]
            await draw(engine)
            await draw(engine, count=2)
            assert counters["stats"]["unique_graphs"] == graphs  # no request compiled anything
        finally:
            await engine.aclose()

    run(go())


def test_a_cache_combines_with_regional_compilation(tiny: dict[str, Path]) -> None:
    # the cache hooks leave regions to eager mode, so the blocks are compiled without fullgraph
    async def go() -> None:
        engine = await started(tiny["flux2-klein"], cache="taylorseer", compile="regional", steps=6)
        try:
            assert len(await draw(engine)) == 1
        finally:
            await engine.aclose()

    run(go())


def test_edit_families_are_probed_with_an_input_image(tiny: dict[str, Path]) -> None:
    async def go() -> None:
        engine = await started(tiny["qwen-image-edit-plus"], cache="taylorseer", guidance_scale=1.0)
        try:
            assert engine._runner is not None and len(engine._runner.warmup_seconds) == 1
            job = ImageJob(
                model="m",
                tasks=(ImageTask(index=0, prompt="make it blue", seed=3),),
                width=64,
                height=64,
                request_id="edit",
                references=(Image.new("RGB", (64, 64), "red"),),
            )
            assert [result.index async for result in engine.generate(job)] == [0]
        finally:
            await engine.aclose()

    run(go())


# -- FLUX.2 klein KV ----------------------------------------------------------------------------------


def test_klein_kv_variant_is_detected(tiny: dict[str, Path], tmp_path: Path) -> None:
    info = detect(tiny["flux2-klein-kv"])
    assert (info.family.name, info.pipeline_class, info.steps, info.distilled) == (
        "flux2-klein-kv",
        "Flux2KleinKVPipeline",
        4,
        True,
    )
    named = tmp_path / "FLUX.2-klein-9b-kv"  # saved under Flux2KleinPipeline, named as the KV checkpoint
    named.symlink_to(tiny["flux2-klein"], target_is_directory=True)
    assert json.loads((named / "model_index.json").read_text())["_class_name"] == "Flux2KleinPipeline"
    assert detect(named).family.name == "flux2-klein-kv"
    assert detect(tiny["flux2-klein"]).family.name == "flux2-klein"


def test_klein_kv_group_computes_reference_tokens_once_per_image(tiny: dict[str, Path]) -> None:
    async def go() -> None:
        engine = await started(tiny["flux2-klein-kv"], steps=3)
        assert engine._runner is not None
        pipe = engine._runner.pipe
        assert type(pipe).__name__ == "Flux2KleinKVPipeline"
        tokens: list[int] = []
        hook = pipe.transformer.register_forward_pre_hook(
            lambda module, args, kwargs: tokens.append(kwargs["hidden_states"].shape[1]), with_kwargs=True
        )
        try:
            tasks = tuple(ImageTask(index=i, prompt=f"panel {i}", seed=i) for i in range(3))
            job = ImageJob(model="m", tasks=tasks, width=64, height=64, request_id="kv", group=True)
            results = [result async for result in engine.generate(job)]
        finally:
            hook.remove()
            await engine.aclose()
        assert [result.index for result in results] == [0, 1, 2]
        assert engine.stats.references == 0 + 1 + 2  # earlier outputs fed forward
        latent = 16  # 64x64 image -> 4x4 packed tokens
        # image 0: no reference; images 1 and 2: the references' tokens only in the first of 3 steps
        assert tokens == [latent] * 3 + [latent + 16, latent, latent] + [latent + 32, latent, latent]

    run(go())


def test_options_that_need_no_probe_start_without_a_warm_up(tiny: dict[str, Path]) -> None:
    async def go() -> None:
        engine = await started(tiny["flux2-klein"])
        try:
            assert engine._runner is not None and engine._runner.warmup_seconds == []
        finally:
            await engine.aclose()

    run(go())
