"""The diffusers engine's options: the keys of a ``[[models]]`` table, checked and typed (no torch).

Unknown keys and wrong types are errors at start-up: a typo in a config must not silently fall back
to a default. :data:`OPTIONS` is the table the docs are written from.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, cast

from .families import ModelSetupError

#: (name, type, default, help) - the documented option table
OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("source", "str", "required", "Local diffusers model directory, or a Hugging Face hub id (org/name)."),
    ("allow_download", "bool", "false", "Let a hub id download; otherwise it loads from the local cache only."),
    ("revision", "str", "", "Hub revision (branch, tag or commit) of a hub id."),
    ("variant", "str", "", "Weight file variant, e.g. 'fp16'."),
    ("device", "str", "auto", "'cuda', 'cuda:1', 'mps' or 'cpu'; auto = cuda, then mps, then cpu."),
    (
        "dtype",
        "str",
        "auto",
        "'float32', 'bfloat16' or 'float16'; auto = bf16 (fp16 where bf16 is missing) on GPU, fp32 on CPU.",
    ),
    ("offload", "str", "none", "'none', 'model' (enable_model_cpu_offload) or 'sequential' (GPU memory saver)."),
    ("steps", "int", "family", "Denoising steps."),
    ("fast_steps", "int", "steps/2", "Steps when the request asks optimize_prompt_options.mode = fast."),
    ("guidance_scale", "float", "family", "Default guidance when the request gives none (true CFG on Qwen-Image)."),
    ("strength", "float", "0.7", "img2img strength for one reference on SD/SDXL/FLUX.1/Qwen-Image."),
    ("max_references", "int", "family", "Cap on reference images, at most the family's limit; 0 = none."),
    ("native_pixels", "int", "family", "Pixel budget of generation (e.g. 1048576 = 1024x1024); the server resizes."),
    ("size_multiple", "int", "vae x 2", "Generated sides are multiples of this."),
    (
        "group_feed_forward",
        "bool",
        "true",
        "In a group, feed earlier outputs to later images as references (multi-reference families).",
    ),
    ("max_batch_size", "int", "4", "Most compatible text-to-image images run as one pipeline call."),
    ("batch_window_ms", "float", "10", "How long a first image waits for others to batch with."),
)


def looks_like_hub_id(source: str) -> bool:
    """``org/name`` (one slash, no path prefix) names a hub repository; anything else is a local path."""
    if source.startswith((".", "/", "~")) or "\\" in source or source.count("/") != 1:
        return False
    org, name = source.split("/")
    return bool(org and name)


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


@dataclass(frozen=True)
class DiffusersOptions:
    """Typed options of one diffusers model."""

    source: str
    allow_download: bool = False
    revision: str | None = None
    variant: str | None = None
    device: str | None = None
    dtype: str | None = None
    offload: str = "none"
    steps: int | None = None
    fast_steps: int | None = None
    guidance_scale: float | None = None
    strength: float = 0.7
    max_references: int | None = None
    native_pixels: int | None = None
    size_multiple: int | None = None
    group_feed_forward: bool = True
    max_batch_size: int = 4
    batch_window_ms: float = 10.0

    @classmethod
    def parse(cls, model: str, options: dict[str, Any]) -> DiffusersOptions:
        """Check ``options`` (a ``[[models]]`` table less name/engine/aliases) and build the options."""
        where = f"model {model!r} (engine diffusers)"
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ModelSetupError(f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        source = options.get("source")
        if not isinstance(source, str) or not source.strip():
            raise ModelSetupError(f"{where}: option 'source' (a model directory or hub id) is required")
        values: dict[str, Any] = {"source": source.strip()}

        def take(name: str, kind: type | tuple[type, ...], check: Any = None, rule: str = "") -> None:
            if name not in options:
                return
            value = options[name]
            if isinstance(value, bool) and kind is not bool:
                raise ModelSetupError(f"{where}: option {name!r} must be {rule or kind}, got {value!r}")
            if not isinstance(value, kind):
                raise ModelSetupError(f"{where}: option {name!r} must be {rule or kind}, got {value!r}")
            if check is not None and not check(value):
                raise ModelSetupError(f"{where}: option {name!r} must be {rule}, got {value!r}")
            values[name] = float(cast(float, value)) if kind == (int, float) else value

        take("allow_download", bool, rule="true or false")
        take("group_feed_forward", bool, rule="true or false")
        take("revision", str, lambda v: bool(v), "a non-empty string")
        take("variant", str, lambda v: bool(v), "a non-empty string")
        take("device", str, lambda v: v.split(":")[0] in {"cuda", "mps", "cpu", "xpu"}, "cuda[:N], mps, xpu or cpu")
        take("dtype", str, lambda v: v.lower() in _DTYPES, "float32, bfloat16 or float16")
        if "dtype" in values:
            values["dtype"] = _DTYPES[values["dtype"].lower()]
        take("offload", str, lambda v: v in {"none", "model", "sequential"}, "none, model or sequential")
        take("steps", int, lambda v: 1 <= v <= 1000, "an integer in 1..1000")
        take("fast_steps", int, lambda v: 1 <= v <= 1000, "an integer in 1..1000")
        take("guidance_scale", (int, float), lambda v: 0 <= v <= 100, "a number in 0..100")
        take("strength", (int, float), lambda v: 0 < v <= 1, "a number in (0, 1]")
        take("max_references", int, lambda v: 0 <= v <= 14, "an integer in 0..14")
        take("native_pixels", int, lambda v: 64 <= v <= 64 * 1024 * 1024, "an integer in 64..67108864")
        take("size_multiple", int, lambda v: 1 <= v <= 256, "an integer in 1..256")
        take("max_batch_size", int, lambda v: 1 <= v <= 64, "an integer in 1..64")
        take("batch_window_ms", (int, float), lambda v: 0 <= v <= 10_000, "a number of milliseconds in 0..10000")
        return cls(**values)
