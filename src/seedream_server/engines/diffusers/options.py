"""The diffusers engine's options: the keys of a ``[[models]]`` table, checked and typed (no torch).

Unknown keys and wrong types are errors at start-up: a typo in a config must not silently fall back
to a default. :data:`OPTIONS` is the table the docs are written from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, cast, get_type_hints

from .families import ModelSetupError


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


Check = Callable[[Any], bool]


def option(default: Any, help: str, *, shown: str | None = None, rule: str = "", check: Check | None = None) -> Any:
    """A field of :class:`DiffusersOptions` with its documentation and its check as metadata.

    ``shown`` is the default as the docs state it (when it is not the literal value); ``check`` and ``rule``
    say what a configured value must be (the type comes from the field's annotation).
    """
    return field(default=default, metadata={"help": help, "shown": shown, "rule": rule, "check": check})


def _between(low: float, high: float) -> Check:
    return lambda value: low <= value <= high


def _non_empty(value: Any) -> bool:
    return bool(value)


CACHES = ("none", "first-block", "taylorseer", "magcache", "faster")
QUANTIZATIONS = ("none", "int8wo", "fp8wo", "fp8", "nf4")


def _floats(text: str) -> tuple[float, ...] | None:
    """``"1.0, 0.98"`` as numbers, or ``None`` when it is not a list of positive numbers."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        return None
    return values if values and all(v > 0 for v in values) else None


def _sizes(text: str) -> tuple[tuple[int, int], ...] | None:
    """``"1024x1024,1360x768"`` as (width, height) pairs, or ``None`` when malformed."""
    sizes = []
    for part in text.lower().replace(" ", "").split(","):
        width, _, height = part.partition("x")
        if not (width.isdigit() and height.isdigit()) or not (16 <= int(width) <= 8192 and 16 <= int(height) <= 8192):
            return None
        sizes.append((int(width), int(height)))
    return tuple(sizes) or None


@dataclass(frozen=True)
class DiffusersOptions:
    """Typed options of one diffusers model, and THE option table: docs and checks come from the fields."""

    source: str = option("", "Local diffusers model directory, or a Hugging Face hub id (org/name).", shown="required")
    allow_download: bool = option(False, "Let a hub id download; otherwise it loads from the local cache only.")
    revision: str | None = option(
        None, "Hub revision (branch, tag or commit) of a hub id.", shown="", rule="a non-empty string", check=_non_empty
    )
    variant: str | None = option(
        None, "Weight file variant, e.g. 'fp16'.", shown="", rule="a non-empty string", check=_non_empty
    )
    device: str | None = option(
        None,
        "'cuda', 'cuda:1', 'mps' or 'cpu'; auto = cuda, then mps, then cpu.",
        shown="auto",
        rule="cuda[:N], mps, xpu or cpu",
        check=lambda v: v.split(":")[0] in {"cuda", "mps", "cpu", "xpu"},
    )
    dtype: str | None = option(
        None,
        "'float32', 'bfloat16' or 'float16'; auto = bf16 (fp16 where bf16 is missing) on GPU, fp32 on CPU.",
        shown="auto",
        rule="float32, bfloat16 or float16",
        check=lambda v: v.lower() in _DTYPES,
    )
    offload: str = option(
        "none",
        "'none', 'model' (enable_model_cpu_offload), 'sequential' (least GPU memory, slowest) or 'group' "
        "(enable_group_offload: one block at a time, overlapped with compute on CUDA).",
        rule="none, model, sequential or group",
        check=lambda v: v in {"none", "model", "sequential", "group"},
    )
    steps: int | None = option(
        None, "Denoising steps.", shown="family", rule="an integer in 1..1000", check=_between(1, 1000)
    )
    fast_steps: int | None = option(
        None,
        "Steps when the request asks optimize_prompt_options.mode = fast.",
        shown="steps/2",
        rule="an integer in 1..1000",
        check=_between(1, 1000),
    )
    guidance_scale: float | None = option(
        None,
        "Default guidance when the request gives none (true CFG on Qwen-Image).",
        shown="family",
        rule="a number in 0..100",
        check=_between(0, 100),
    )
    strength: float = option(
        0.7,
        "img2img strength for one reference on SD/SDXL/FLUX.1/Qwen-Image.",
        rule="a number in (0, 1]",
        check=lambda v: 0 < v <= 1,
    )
    max_references: int | None = option(
        None,
        "Cap on reference images, at most the family's limit; 0 = none.",
        shown="family",
        rule="an integer in 0..14",
        check=_between(0, 14),
    )
    native_pixels: int | None = option(
        None,
        "Pixel budget of generation (e.g. 1048576 = 1024x1024); the server resizes.",
        shown="family",
        rule="an integer in 64..67108864",
        check=_between(64, 64 * 1024 * 1024),
    )
    size_multiple: int | None = option(
        None,
        "Generated sides are multiples of this.",
        shown="vae x 2",
        rule="an integer in 1..256",
        check=_between(1, 256),
    )
    group_feed_forward: bool = option(
        True, "In a group, feed earlier outputs to later images as references (multi-reference families)."
    )
    max_batch_size: int = option(
        4,
        "Most compatible text-to-image images run as one pipeline call.",
        rule="an integer in 1..64",
        check=_between(1, 64),
    )
    batch_window_ms: float = option(
        10.0,
        "How long a first image waits for others to batch with.",
        shown="10",
        rule="a number of milliseconds in 0..10000",
        check=_between(0, 10_000),
    )

    layers: int = option(
        4,
        "Layers a layer-decomposition model (Qwen-Image-Layered) draws per request.",
        rule="an integer in 1..16",
        check=_between(1, 16),
    )

    # -- speed options (docs/engines.md "Speed options"; applied by speed.py, probed at start) --
    cache: str = option(
        "none",
        "Step cache on the transformer: 'first-block', 'taylorseer', 'magcache' or 'faster' (diffusers hooks; "
        "output moves from the exact one).",
        rule="none, first-block, taylorseer, magcache or faster",
        check=lambda v: v in CACHES,
    )
    cache_threshold: float | None = option(
        None,
        "first-block: relative change of the first block's residual under which the rest is reused (0.05); "
        "magcache: accumulated error budget (0.06).",
        shown="method",
        rule="a number in (0, 1]",
        check=lambda v: 0 < v <= 1,
    )
    cache_interval: int | None = option(
        None,
        "taylorseer: steps between full computations (5); faster: attention recomputed every N steps (2); "
        "magcache: most steps skipped in a row (3).",
        shown="method",
        rule="an integer in 1..100",
        check=_between(1, 100),
    )
    cache_warmup_steps: int | None = option(
        None,
        "taylorseer: steps computed in full before predicting (3).",
        shown="method",
        rule="an integer in 0..100",
        check=_between(0, 100),
    )
    cache_mag_ratios: str | None = option(
        None,
        "magcache: the model's magnitude ratios, comma-separated (FLUX.1: diffusers' own when unset).",
        shown="",
        rule="comma-separated positive numbers",
        check=lambda v: _floats(v) is not None,
    )
    compile: str = option(
        "none",
        "torch.compile the denoiser: 'regional' (compile_repeated_blocks: its repeated blocks, fast to compile) "
        "or 'full' (the whole model); compiled during the start-up warm-up.",
        rule="none, regional or full",
        check=lambda v: v in {"none", "regional", "full"},
    )
    quantization: str = option(
        "none",
        "Weights of the denoiser: 'int8wo', 'fp8wo' (torchao weight-only), 'fp8' (torchao dynamic FP8, "
        "CUDA compute >= 8.9) or 'nf4' (bitsandbytes 4-bit).",
        rule="none, int8wo, fp8wo, fp8 or nf4",
        check=lambda v: v in QUANTIZATIONS,
    )
    attention_backend: str | None = option(
        None,
        "diffusers' attention dispatcher backend, e.g. 'native', 'flash', 'sage', 'flex', 'xformers', '_native_cudnn'.",
        shown="native",
        rule="a backend name of diffusers.models.attention_dispatch.AttentionBackendName",
        check=lambda v: bool(v) and v == v.strip().lower(),
    )
    vae: str = option(
        "none",
        "'tiled' and/or 'sliced' decoding (e.g. 'tiled,sliced': less memory at large sizes and batches), or "
        "'tiny' (an AutoencoderTiny from tiny_vae_source: faster, approximate).",
        rule="none, or tiled, sliced, tiled,sliced, or tiny",
        check=lambda v: (
            v == "none" or v == "tiny" or bool(set(v.split(",")) and set(v.split(",")) <= {"tiled", "sliced"})
        ),
    )
    tiny_vae_source: str | None = option(
        None,
        "Local directory of an AutoencoderTiny (taesd, taesdxl, taef1) for vae = 'tiny'.",
        shown="",
        rule="a non-empty string",
        check=_non_empty,
    )
    channels_last: bool = option(False, "channels_last memory format for the 2D-convolution parts (UNet, VAE).")
    warmup_sizes: str | None = option(
        None,
        "Generation sizes (WxH, comma-separated) the start-up warm-up draws when a speed option is set, so that "
        "no request pays compilation.",
        shown="native square",
        rule="comma-separated WxH sizes",
        check=lambda v: _sizes(v) is not None,
    )

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
        for name, row in _ROWS.items():
            if name in options and name != "source":
                values[name] = row.take(where, options[name])
        if "dtype" in values:
            values["dtype"] = _DTYPES[values["dtype"].lower()]
        parsed = cls(**values)
        parsed._check_speed(where)
        return parsed

    def _check_speed(self, where: str) -> None:
        """Speed options that only mean something together (checks that need no torch)."""
        if self.vae == "tiny" and not self.tiny_vae_source:
            raise ModelSetupError(f"{where}: vae = 'tiny' needs tiny_vae_source (a local AutoencoderTiny directory)")
        if self.tiny_vae_source and self.vae != "tiny":
            raise ModelSetupError(f"{where}: tiny_vae_source is set but vae is {self.vae!r} (set vae = 'tiny')")
        for name in ("cache_threshold", "cache_interval", "cache_warmup_steps", "cache_mag_ratios"):
            if getattr(self, name) is not None and self.cache == "none":
                raise ModelSetupError(f"{where}: {name} is set but cache is 'none'")
        used = {
            "first-block": {"cache_threshold"},
            "taylorseer": {"cache_interval", "cache_warmup_steps"},
            "magcache": {"cache_threshold", "cache_interval", "cache_mag_ratios"},
            "faster": {"cache_interval"},
        }.get(self.cache, set())
        for name in ("cache_threshold", "cache_interval", "cache_warmup_steps", "cache_mag_ratios"):
            if getattr(self, name) is not None and self.cache != "none" and name not in used:
                raise ModelSetupError(f"{where}: {name} does not apply to cache = {self.cache!r}")

    @property
    def speed(self) -> dict[str, Any]:
        """The speed options set away from their defaults (what the start-up probe vouches for)."""
        chosen: dict[str, Any] = {}
        for name in ("cache", "compile", "quantization", "vae"):
            if getattr(self, name) != "none":
                chosen[name] = getattr(self, name)
        if self.attention_backend is not None:
            chosen["attention_backend"] = self.attention_backend
        if self.channels_last:
            chosen["channels_last"] = True
        if self.offload == "group":
            chosen["offload"] = "group"
        return chosen

    @property
    def mag_ratios(self) -> tuple[float, ...] | None:
        return _floats(self.cache_mag_ratios) if self.cache_mag_ratios else None

    @property
    def warmup(self) -> tuple[tuple[int, int], ...]:
        """Configured warm-up sizes (empty: the native square size)."""
        return (_sizes(self.warmup_sizes) or ()) if self.warmup_sizes else ()


@dataclass(frozen=True)
class _Row:
    """One option as the parser and the docs see it."""

    name: str
    kind: str  # "bool", "str", "int" or "float"
    help: str
    shown: str
    rule: str
    check: Check | None

    def take(self, where: str, value: Any) -> Any:
        """The configured ``value`` checked against its type and rule (ints are accepted as floats)."""
        accepted: tuple[type, ...] = {"bool": (bool,), "str": (str,), "int": (int,), "float": (int, float)}[self.kind]
        rule = self.rule or ("true or false" if self.kind == "bool" else f"a {self.kind}")
        if (isinstance(value, bool) and self.kind != "bool") or not isinstance(value, accepted):
            raise ModelSetupError(f"{where}: option {self.name!r} must be {rule}, got {value!r}")
        if self.check is not None and not self.check(value):
            raise ModelSetupError(f"{where}: option {self.name!r} must be {rule}, got {value!r}")
        return float(cast(float, value)) if self.kind == "float" else value


def _read_rows() -> dict[str, _Row]:
    hints = get_type_hints(DiffusersOptions)
    rows = {}
    for f in fields(DiffusersOptions):
        kind = next(k for k in ("bool", "str", "int", "float") if k in str(hints[f.name]))
        shown = f.metadata["shown"]
        if shown is None:
            shown = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        rows[f.name] = _Row(f.name, kind, f.metadata["help"], shown, f.metadata["rule"], f.metadata["check"])
    return rows


_ROWS = _read_rows()

#: (name, type, default as documented, help): the option table docs/engines.md is checked against
OPTIONS: tuple[tuple[str, str, str, str], ...] = tuple((r.name, r.kind, r.shown, r.help) for r in _ROWS.values())
