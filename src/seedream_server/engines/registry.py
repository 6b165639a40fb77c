"""The engine registry: a model's ``engine`` kind -> the implementation that serves it."""

from __future__ import annotations

from collections.abc import Callable

from ..config import ModelConfig
from .base import Engine
from .preview import PreviewEngine
from .ray import RayEngine, split_placement

EngineFactory = Callable[[ModelConfig], Engine]


def build_engine(model: ModelConfig, extra: dict[str, EngineFactory] | None = None, *, ray_address: str = "") -> Engine:
    """The engine for ``model`` (``extra`` adds kinds, e.g. in tests). A model with ``executor = "ray"`` gets
    a :class:`~.ray.RayEngine` that builds the same engine (without the Ray keys) on each Serve replica."""
    placement, model = split_placement(model)
    if placement is not None:  # the ray package itself is imported when the engine starts (the ray extra)
        return RayEngine(model, placement, ray_address)
    if extra and model.engine in extra:
        return extra[model.engine](model)
    if model.engine == "preview":
        return PreviewEngine()
    if model.engine == "diffusers":
        # imported here: torch and diffusers are an optional extra, needed only by a model that asks for them
        from .diffusers import DiffusersEngine

        return DiffusersEngine.from_options(model.name, model.options)
    if model.engine in ("ark", "openai"):
        from .upstream import ArkEngine, OpenAIEngine

        kind = ArkEngine if model.engine == "ark" else OpenAIEngine
        return kind.from_options(model.name, model.options)
    known = ", ".join(sorted({"preview", "diffusers", "ark", "openai", *(extra or {})}))
    raise ValueError(f"model {model.name!r}: unknown engine {model.engine!r} (available: {known})")
