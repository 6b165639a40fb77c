"""Loading an operator's plug-in from a setting: ``package.module:attribute`` names a class or factory
(called without arguments) or an instance of the plug point's ABC."""

from __future__ import annotations

import importlib


def load_plugin(spec: str, plug_point: type, what: str) -> object | None:
    """The plug-in ``spec`` names, checked to be a ``plug_point`` (callers narrow the type with ``cast``);
    ``None`` for an empty spec."""
    if not spec:
        return None
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{what} {spec!r}: expected 'package.module:attribute'")
    target = getattr(importlib.import_module(module_name), attribute)
    plugin = target() if callable(target) and not isinstance(target, plug_point) else target
    if not isinstance(plugin, plug_point):
        raise ValueError(f"{what} {spec!r} is not a {plug_point.__name__}")
    return plugin
