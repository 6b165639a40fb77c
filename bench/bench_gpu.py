"""Speed options of the diffusers engine, measured: bare diffusers vs the server, each option alone and combined.

For each family (SDXL, FLUX.2 klein 4B, Qwen-Image-Edit Plus) the benchmark builds a pipeline with the REAL
architecture (configs written below, random weights, byte-level tokenizers: nothing is downloaded), saves it
(bf16 on a GPU) and loads it the way the server does. It prints, side by side:

* **bare diffusers**: ``pipe(...)`` with the arguments the engine would pass, median of ``--repeat`` calls;
* **server, in a row**: ``DiffusersEngine`` jobs of one image, one after the other;
* **server, 4 at once**: 4 one-image jobs at the same time (the worker batches them where the family batches);
* **each option alone**, then **combined** (the fastest cache, compilation, quantization and attention backend
  that ran alone): server, in a row, after the start-up warm-up;
* **batch sizes**: bare calls with a list of N prompts (families that batch).

Columns: seconds per image, peak GPU memory (``torch.cuda.max_memory_allocated``; CPU: n/a), and the mean
absolute difference of the output from the exact output (the bare call, same seed), in 0-255 pixel levels.
An option the engine refuses at start-up is printed with its one-line reason.

On a GPU: ``python bench/bench_gpu.py`` (1024x1024, 20 steps; Qwen-Image-Edit Plus needs about 60 GB of disk
under ``--workdir`` and 60 GB of GPU memory). Without a GPU it runs the tiny pipelines of
``tests/tiny_pipelines.py`` at a small size (``--tiny``, automatic on CPU), which is how CI proves it works.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import tiny_pipelines  # noqa: E402
from seedream_server.engines.base import ImageJob, ImageTask  # noqa: E402
from seedream_server.engines.diffusers import DiffusersEngine, ModelSetupError, detect  # noqa: E402

FAMILIES = ("sdxl", "flux2-klein", "qwen-image-edit-plus")

#: each option alone (label -> [[models]] keys)
VARIANTS: dict[str, dict[str, Any]] = {
    "cache=first-block": {"cache": "first-block"},
    "cache=taylorseer": {"cache": "taylorseer"},
    "cache=magcache": {"cache": "magcache"},
    "cache=faster": {"cache": "faster"},
    "compile=regional": {"compile": "regional"},
    "compile=full": {"compile": "full"},
    "quantization=fp8": {"quantization": "fp8"},
    "quantization=fp8wo": {"quantization": "fp8wo"},
    "quantization=int8wo": {"quantization": "int8wo"},
    "quantization=nf4": {"quantization": "nf4"},
    "attention_backend=flash": {"attention_backend": "flash"},
    "attention_backend=sage": {"attention_backend": "sage"},
    "attention_backend=_native_cudnn": {"attention_backend": "_native_cudnn"},
    "attention_backend=_native_math": {"attention_backend": "_native_math"},
    "vae=tiled,sliced": {"vae": "tiled,sliced"},
    "channels_last": {"channels_last": True},
    "offload=group": {"offload": "group"},
}
#: on CPU by default: what runs in seconds (compilation takes ~30 s a model there; ask for it with --options)
TINY_VARIANTS = (
    "cache=first-block",
    "cache=taylorseer",
    "cache=magcache",
    "cache=faster",
    "attention_backend=_native_math",
    "vae=tiled,sliced",
    "channels_last",
)
#: the groups "combined" takes the fastest working member of
COMBINABLE = ("cache", "compile", "quantization", "attention_backend")


# -- real-size random-weight pipelines (the published configs, written out) ----------------------------------


def clip_text(hidden: int, layers: int, heads: int, intermediate: int, projection: int, act: str) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        projection_dim=projection,
        hidden_act=act,
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def sdxl_components() -> dict[str, Any]:
    """stabilityai/stable-diffusion-xl-base-1.0: UNet 2.6B, CLIP ViT-L and OpenCLIP bigG text encoders."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20),
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=1024,
        scaling_factor=0.13025,
        force_upcast=False,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    return {
        "unet": unet,
        "vae": vae,
        "scheduler": scheduler,
        "text_encoder": CLIPTextModel(clip_text(768, 12, 12, 3072, 768, "quick_gelu")),
        "tokenizer": tiny_pipelines.clip_tokenizer(),
        "text_encoder_2": CLIPTextModelWithProjection(clip_text(1280, 32, 20, 5120, 1280, "gelu")),
        "tokenizer_2": tiny_pipelines.clip_tokenizer(),
    }


def klein_components() -> dict[str, Any]:
    """black-forest-labs/FLUX.2-klein-4B: 5 + 20 block transformer (3.9B), Qwen3-4B text encoder, FLUX.2 VAE."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,
        num_layers=5,
        num_single_layers=20,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=7680,
        timestep_guidance_channels=256,
        mlp_ratio=3.0,
        axes_dims_rope=(32, 32, 32, 32),
        rope_theta=2000,
        guidance_embeds=False,
    )
    text = Qwen3Config(
        hidden_size=2560,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=9728,
        vocab_size=151936,
        max_position_embeddings=40960,
        pad_token_id=256,
    )
    return {
        "transformer": transformer,
        "text_encoder": Qwen3ForCausalLM(text),
        "tokenizer": tiny_pipelines.qwen_tokenizer(),
        "vae": AutoencoderKLFlux2(),
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }


def qwen_edit_plus_components() -> dict[str, Any]:
    """Qwen/Qwen-Image-Edit-2509: 60-block MMDiT (20B), Qwen2.5-VL-7B text encoder with its vision tower."""
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=60,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=3584,
        guidance_embeds=False,
        axes_dims_rope=(16, 56, 56),
    )
    special = {token: 256 + i for i, token in enumerate(tiny_pipelines.QWEN_SPECIAL_TOKENS)}
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        hidden_size=3584,
        vocab_size=152064,
        image_token_id=special["<|image_pad|>"],
        video_token_id=special["<|video_pad|>"],
        vision_start_token_id=special["<|vision_start|>"],
        vision_end_token_id=special["<|vision_end|>"],
    )
    return {
        "transformer": transformer,
        "text_encoder": Qwen2_5_VLForConditionalGeneration(config),
        "tokenizer": tiny_pipelines.qwen_tokenizer(),
        "vae": AutoencoderKLQwenImage(),
        "scheduler": FlowMatchEulerDiscreteScheduler(),
    }


REAL: dict[str, Callable[[], dict[str, Any]]] = {
    "sdxl": sdxl_components,
    "flux2-klein": klein_components,
    "qwen-image-edit-plus": qwen_edit_plus_components,
}


def build_real(family: str, path: Path, dtype: torch.dtype) -> Path:
    """Save a real-size random-weight pipeline of ``family`` to ``path`` (weights in ``dtype``)."""
    from diffusers import Flux2KleinPipeline, QwenImageEditPlusPipeline, StableDiffusionXLPipeline

    torch.manual_seed(0)
    components = REAL[family]()
    for part in components.values():
        if isinstance(part, torch.nn.Module):
            part.to(dtype)
    if family == "sdxl":
        StableDiffusionXLPipeline(**components).save_pretrained(str(path))
    elif family == "flux2-klein":
        Flux2KleinPipeline(**components, is_distilled=True).save_pretrained(str(path))
    else:
        QwenImageEditPlusPipeline(**components, processor=None).save_pretrained(str(path))
        _write_qwen_processor(path)
    return path


def _write_qwen_processor(path: Path) -> None:
    import json

    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = path / "processor"
    Qwen2VLImageProcessorPil().save_pretrained(str(folder))
    tiny_pipelines.qwen_tokenizer().save_pretrained(str(folder))
    (folder / "chat_template.jinja").write_text(tiny_pipelines.QWEN_CHAT_TEMPLATE)
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index_file.write_text(json.dumps(index, indent=2))


def build(family: str, path: Path, tiny: bool, dtype: torch.dtype) -> Path:
    if tiny:
        return tiny_pipelines.BUILDERS[family](path)
    return build_real(family, path, dtype)


# -- measuring -------------------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    seconds: float | None = None  # per image
    peak_gib: float | None = None
    mad: float | None = None
    note: str = ""


@dataclass
class Setup:
    family: str
    model_dir: Path
    device: str
    dtype: str
    size: int
    steps: int
    repeat: int
    seed: int = 1234

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def options(self, **extra: Any) -> dict[str, Any]:
        return {
            "source": str(self.model_dir),
            "device": self.device,
            "dtype": self.dtype,
            "steps": self.steps,
            "native_pixels": self.size * self.size,
            "guidance_scale": 1.0 if self.family == "qwen-image-edit-plus" else None,
            **extra,
        }

    def reference(self) -> Image.Image | None:
        if self.family != "qwen-image-edit-plus":
            return None
        return Image.new("RGB", (self.size, self.size), (180, 120, 60))


def _clean(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


@contextmanager
def peak_memory(setup: Setup, row: Row) -> Iterator[None]:
    if setup.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    yield
    if setup.cuda:
        torch.cuda.synchronize()
        row.peak_gib = torch.cuda.max_memory_allocated() / 2**30


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def mad(image: Image.Image, exact: np.ndarray) -> float:
    return float(np.abs(pixels(image) - exact).mean())


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bare(setup: Setup, batch_sizes: tuple[int, ...]) -> tuple[Row, np.ndarray, list[Row]]:
    """The plain diffusers call (what the engine passes, nothing else) and the batch-size sweep."""
    from diffusers import DiffusionPipeline

    from seedream_server.engines.diffusers.loading import _qwen_processor

    info = detect(setup.model_dir)
    extra: dict[str, Any] = {}
    if setup.family == "qwen-image-edit-plus":
        extra["processor"] = _qwen_processor(setup.model_dir)
    pipe = DiffusionPipeline.from_pretrained(str(setup.model_dir), dtype=getattr(torch, setup.dtype), **extra)
    pipe.to(setup.device)
    pipe.set_progress_bar_config(disable=True)
    guidance = 1.0 if setup.family == "qwen-image-edit-plus" else info.guidance_scale

    def call(count: int) -> list[Image.Image]:
        prompts = [f"a lighthouse at dusk {i}" if i else "a lighthouse at dusk" for i in range(count)]
        kwargs: dict[str, Any] = {
            "prompt": prompts[0] if count == 1 else prompts,
            "height": setup.size,
            "width": setup.size,
            "num_inference_steps": setup.steps,
            info.family.guidance_arg: guidance,
            "generator": [torch.Generator(setup.device).manual_seed(setup.seed + i) for i in range(count)]
            if count > 1
            else torch.Generator(setup.device).manual_seed(setup.seed),
        }
        reference = setup.reference()
        if reference is not None:
            kwargs["image"] = [reference]

        def run() -> list[Image.Image]:
            with torch.inference_mode():
                return list(pipe(**kwargs).images)

        # on a thread of its own, as the server's device worker runs it (CPU thread pools differ per thread)
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(run).result()

    call(1)  # warm-up (kernels, allocator)
    row = Row("bare diffusers")
    times = []
    with peak_memory(setup, row):
        for _ in range(setup.repeat):
            started = time.perf_counter()
            images = call(1)
            times.append(time.perf_counter() - started)
    row.seconds = statistics.median(times)
    exact = pixels(images[0])
    row.mad = 0.0
    sweep = []
    if info.family.batchable:
        for size in batch_sizes:
            batch_row = Row(f"bare, batch of {size}")
            with peak_memory(setup, batch_row):
                started = time.perf_counter()
                call(size)
                batch_row.seconds = (time.perf_counter() - started) / size
            sweep.append(batch_row)
    return row, exact, sweep  # the pipeline goes with this frame; measure() frees the memory


async def _jobs(engine: DiffusersEngine, setup: Setup, count: int, at_once: bool) -> list[Image.Image]:
    reference = setup.reference()

    async def one(i: int) -> Image.Image:
        task = ImageTask(index=0, prompt="a lighthouse at dusk", seed=setup.seed)
        job = ImageJob(
            model="bench",
            tasks=(task,),
            width=setup.size,
            height=setup.size,
            references=(reference,) if reference is not None else (),
            request_id=f"bench-{i}",
        )
        results = [result async for result in engine.generate(job)]
        assert results[0].image is not None
        return results[0].image

    if at_once:
        return list(await asyncio.gather(*(one(i) for i in range(count))))
    return [await one(i) for i in range(count)]


async def served(setup: Setup, label: str, extra: dict[str, Any], exact: np.ndarray, at_once: bool) -> list[Row]:
    """Rows through the engine: in a row (and 4 at once when asked)."""
    try:
        engine = DiffusersEngine.from_options("bench", _clean(setup.options(**extra)))
        await engine.start()
    except ModelSetupError as exc:
        return [Row(label, note=f"refused: {exc}")]
    rows = []
    try:
        await _jobs(engine, setup, 1, at_once=False)  # the first request after start (after the warm-up, if any)
        row = Row(label + (", in a row" if at_once else ""))
        with peak_memory(setup, row):
            started = time.perf_counter()
            images = await _jobs(engine, setup, setup.repeat, at_once=False)
            row.seconds = (time.perf_counter() - started) / setup.repeat
        row.mad = max(mad(image, exact) for image in images)
        runner = engine._runner
        if runner is not None and runner.warmup_seconds:
            row.note = f"start-up warm-up {sum(runner.warmup_seconds):.1f} s"
        rows.append(row)
        if at_once:
            row = Row(label + ", 4 at once")
            with peak_memory(setup, row):
                started = time.perf_counter()
                images = await _jobs(engine, setup, 4, at_once=True)
                row.seconds = (time.perf_counter() - started) / 4
            row.mad = max(mad(image, exact) for image in images)
            row.note = f"largest batch {engine.stats.largest_batch}"
            rows.append(row)
    finally:
        await engine.aclose()
        del engine
        free()
    return rows


def combined(rows: list[Row]) -> dict[str, Any]:
    """The fastest option of each combinable group that ran alone."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for row in rows:
        label = row.label.removesuffix(", in a row")
        if row.seconds is None or label not in VARIANTS:
            continue
        group = label.split("=")[0]
        if group in COMBINABLE and (group not in best or row.seconds < best[group][0]):
            best[group] = (row.seconds, VARIANTS[label])
    chosen: dict[str, Any] = {}
    for _, options in best.values():
        chosen.update(options)
    return chosen


def measure(setup: Setup, variants: list[str], batch_sizes: tuple[int, ...]) -> list[Row]:
    base, exact, sweep = bare(setup, batch_sizes)
    free()
    rows = [base]
    rows += asyncio.run(served(setup, "server", {}, exact, at_once=True))
    alone: list[Row] = []
    for label in variants:
        alone += asyncio.run(served(setup, label, VARIANTS[label], exact, at_once=False))
    rows += alone
    together = combined(alone)
    if len(together) > 1:
        label = "combined: " + ", ".join(f"{key}={value}" for key, value in together.items())
        rows += asyncio.run(served(setup, label, together, exact, at_once=False))
    return rows + sweep


def render(setup: Setup, rows: list[Row], reference: float | None) -> str:
    lines = [
        f"### {setup.family} at {setup.size}x{setup.size}, {setup.steps} steps, {setup.dtype} on {setup.device}",
        "",
        "| run | s / image | vs bare | peak GPU memory | mean abs. difference | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        seconds = f"{row.seconds:.3f}" if row.seconds is not None else "—"
        ratio = f"{row.seconds / reference:.2f}x" if row.seconds is not None and reference else "—"
        peak = f"{row.peak_gib:.1f} GiB" if row.peak_gib is not None else ("n/a" if row.seconds is not None else "—")
        diff = f"{row.mad:.2f}" if row.mad is not None else "—"
        lines.append(f"| {row.label} | {seconds} | {ratio} | {peak} | {diff} | {row.note} |")
    return "\n".join(lines)


def machine() -> str:
    import diffusers

    if torch.cuda.is_available():
        where = torch.cuda.get_device_name(0)
    else:
        where = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"{where}; Python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}"


def main(argv: list[str] | None = None) -> list[list[Row]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny pipelines at a small size (automatic on CPU)")
    parser.add_argument("--family", action="append", choices=FAMILIES, help="repeatable; default: all three")
    parser.add_argument("--options", action="append", choices=sorted(VARIANTS), help="repeatable; default: all")
    parser.add_argument("--no-options", action="store_true", help="bare and server rows only")
    parser.add_argument("--size", type=int, help="square side (default 1024; tiny 128)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 20; tiny 8)")
    parser.add_argument("--repeat", type=int, default=4, help="timed images per row (default 4)")
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="bare batch sweep (families that batch)")
    parser.add_argument(
        "--workdir", type=Path, help="where the random-weight pipelines are saved (default: a temp dir)"
    )
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tiny = args.tiny or device == "cpu"
    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    dtype = "bfloat16" if device == "cuda" else "float32"
    size = args.size or (128 if tiny else 1024)
    steps = args.steps or (8 if tiny else 20)
    variants = [] if args.no_options else (args.options or list(TINY_VARIANTS if tiny else VARIANTS))
    batch_sizes = tuple(int(part) for part in args.batch_sizes.split(",") if part)
    print(f"# bench_gpu: {machine()}; {'tiny' if tiny else 'real-size'} random-weight pipelines", flush=True)
    results = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-", dir=args.workdir))
    try:
        for family in args.family or list(FAMILIES):
            model_dir = build(family, workdir / family, tiny, getattr(torch, dtype))
            setup = Setup(family, model_dir, device, dtype, size, steps, args.repeat)
            rows = measure(setup, variants, batch_sizes)
            print(render(setup, rows, rows[0].seconds), "\n", flush=True)
            results.append(rows)
            shutil.rmtree(model_dir, ignore_errors=True)
            free()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
