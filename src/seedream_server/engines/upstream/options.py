"""The upstream engines' options: the keys of a ``[[models]]`` table with ``engine = "ark"`` or ``"openai"``.

One dataclass is the option table of both engines: each field carries its help text, the default as the docs
state it, the rule a configured value must meet, and which engines take it. Unknown keys, keys of the other
engine and wrong types are one-line errors at start-up. :func:`option_rows` is what docs/engines.md is
checked against.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, get_type_hints
from urllib.parse import urlsplit

ARK_BASE_URL = "https://ark.cn-beijing.volces.com/api/v3"
BOTH = ("ark", "openai")

Check = Callable[[Any], bool]


class UpstreamSetupError(ValueError):
    """A ``[[models]]`` table of an upstream engine cannot be served as configured."""


def option(
    default: Any,
    help: str,
    *,
    engines: tuple[str, ...] = BOTH,
    shown: str | None = None,
    rule: str = "",
    check: Check | None = None,
    secret: bool = False,
) -> Any:
    """A field of :class:`UpstreamOptions` with its documentation, its check and the engines that take it
    (``secret``: left out of the ``repr``)."""
    meta = {"help": help, "engines": engines, "shown": shown, "rule": rule, "check": check}
    return field(default=default, metadata=meta, repr=not secret)


def _url(value: Any) -> bool:
    parts = urlsplit(value)
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def _urls(value: Any) -> bool:
    return bool(value) and all(isinstance(v, str) and _url(v) for v in value)


def _keys(value: Any) -> bool:
    return all(isinstance(v, str) and v.strip() for v in value)


@dataclass(frozen=True)
class UpstreamOptions:
    """Typed options of one upstream model, and THE option table of the ark and openai engines."""

    base_url: str = option(
        ARK_BASE_URL,
        "Ark API base; requests go to {base_url}/images/generations.",
        engines=("ark",),
        rule="an http(s) URL",
        check=_url,
    )
    base_urls: tuple[str, ...] = option(
        (),
        "Replicas of one OpenAI-compatible images server (e.g. http://gpu-a:8091/v1): each call goes to the one "
        "with the fewest calls in flight; one that fails is left out for a while and the call retried on another.",
        engines=("openai",),
        shown="required",
        rule="a non-empty list of http(s) URLs",
        check=_urls,
    )
    api_keys_env: str = option(
        "",
        "Environment variable holding comma-separated upstream keys (a rotated pool).",
        shown="",
        rule="the name of a set environment variable",
        check=lambda v: bool(v.strip()),
    )
    api_keys: tuple[str, ...] = option(
        (),
        "Upstream keys written in the config (joined to api_keys_env's); none: no Authorization header.",
        shown="[]",
        rule="a list of non-empty strings",
        check=_keys,
        secret=True,
    )
    upstream_model: str = option(
        "", "The model name sent upstream.", shown="name", rule="a non-empty string", check=lambda v: bool(v.strip())
    )
    rehost: bool = option(
        True,
        "Copy upstream images into our storage and serve them under our signed URL (watermark where the upstream "
        "did not draw one, provenance metadata). false: upstream links pass through as they are and expire on "
        "the upstream's clock.",
    )
    timeout_s: float = option(
        120.0,
        "Time limit of one upstream call (connect, each read, each write) and of fetching one upstream image.",
        shown="120",
        rule="a number of seconds in (0, 3600]",
        check=lambda v: 0 < v <= 3600,
    )
    max_retries: int = option(
        3,
        "Retries of a call on connection errors, timeouts, 429 and 5xx (exponential backoff with jitter, "
        "Retry-After honoured); never once an image of that call was delivered.",
        rule="an integer in 0..10",
        check=lambda v: 0 <= v <= 10,
    )
    max_references: int = option(
        14,
        "Most reference images the upstream model takes (edits); also caps the earlier outputs a group feeds "
        "forward to its later images.",
        engines=("openai",),
        rule="an integer in 1..14",
        check=lambda v: 1 <= v <= 14,
    )
    extensions: bool = option(
        True,
        "Send seed and watermark (false when re-hosting: this server draws its own) besides OpenAI's fields "
        "(vLLM-Omni, SGLang Diffusion, seedream-server take them); false for servers that refuse unknown "
        "fields, such as OpenAI's own.",
        engines=("openai",),
    )

    @property
    def keys(self) -> tuple[str, ...]:
        """The pool: api_keys_env's keys, then api_keys'."""
        from_env = os.environ.get(self.api_keys_env, "") if self.api_keys_env else ""
        return tuple(k.strip() for k in from_env.split(",") if k.strip()) + self.api_keys

    @classmethod
    def parse(cls, engine: str, model: str, options: dict[str, Any]) -> UpstreamOptions:
        """Check ``options`` (a ``[[models]]`` table less name/engine/aliases) for ``engine``."""
        where = f"model {model!r} (engine {engine})"
        rows = {name: row for name, row in _ROWS.items() if engine in row.engines}
        unknown = sorted(set(options) - set(rows))
        if unknown:
            raise UpstreamSetupError(
                f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(rows))}"
            )
        values = {name: rows[name].take(where, value) for name, value in options.items()}
        parsed = replace(cls(), **{"upstream_model": model, **values})
        if engine == "openai" and not parsed.base_urls:
            raise UpstreamSetupError(f"{where}: option 'base_urls' (a list of replica URLs) is required")
        if parsed.api_keys_env and not os.environ.get(parsed.api_keys_env, "").strip():
            raise UpstreamSetupError(
                f"{where}: option 'api_keys_env' names {parsed.api_keys_env!r}, which is not set or empty"
            )
        return parsed


_KINDS: dict[str, tuple[type, ...]] = {"bool": (bool,), "str": (str,), "int": (int,), "float": (int, float)}


@dataclass(frozen=True)
class _Row:
    """One option as the parser and the docs see it."""

    name: str
    kind: str  # "bool", "str", "int", "float" or "list"
    help: str
    shown: str
    rule: str
    check: Check | None
    engines: tuple[str, ...]

    def take(self, where: str, value: Any) -> Any:
        """The configured ``value`` checked against its type and rule (ints are accepted as floats)."""
        rule = self.rule or ("true or false" if self.kind == "bool" else f"a {self.kind}")
        if self.kind == "list":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, _KINDS[self.kind]) and (self.kind == "bool" or not isinstance(value, bool))
        if not ok or (self.check is not None and not self.check(value)):
            shown = "[...]" if self.name == "api_keys" else repr(value)  # keys never appear in errors
            raise UpstreamSetupError(f"{where}: option {self.name!r} must be {rule}, got {shown}")
        if self.kind == "list":
            return tuple(v.rstrip("/") if self.name == "base_urls" else v for v in value)
        if self.name == "base_url":
            return value.rstrip("/")
        return float(value) if self.kind == "float" else value


def _read_rows() -> dict[str, _Row]:
    hints = get_type_hints(UpstreamOptions)
    rows = {}
    for f in fields(UpstreamOptions):
        hint = str(hints[f.name])
        kind = "list" if "tuple" in hint else next(k for k in ("bool", "str", "int", "float") if k in hint)
        shown = f.metadata["shown"]
        if shown is None:
            shown = str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
        meta = f.metadata
        rows[f.name] = _Row(f.name, kind, meta["help"], shown, meta["rule"], meta["check"], meta["engines"])
    return rows


_ROWS = _read_rows()


def option_rows(engine: str) -> tuple[tuple[str, str, str, str], ...]:
    """(name, type, default as documented, help) of ``engine``'s options: the table docs/engines.md shows."""
    return tuple((r.name, r.kind, r.shown, r.help) for r in _ROWS.values() if engine in r.engines)
