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
        "'none', 'model' (enable_model_cpu_offload) or 'sequential' (GPU memory saver).",
        rule="none, model or sequential",
        check=lambda v: v in {"none", "model", "sequential"},
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
        return cls(**values)


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
