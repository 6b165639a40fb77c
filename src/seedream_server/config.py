"""Settings as data: one table of (name, type, default, help) read from defaults, a TOML file,
``SEEDREAM_*`` environment variables and command-line flags, in that order of precedence (last wins).

The same table generates the ``seedream serve`` options and the settings section of the docs, so the
help text cannot drift from the code. Models are declared in the TOML file as ``[[models]]`` tables;
with none, the preview engine serves the Seedream model ids.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    type: type
    default: Any
    help: str
    flag: str | None = None  # CLI flag when it differs from --name-with-dashes


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "Address to listen on."),
    Setting("port", int, 8000, "Port to listen on."),
    Setting("data_dir", str, "./data", "Directory for images, the signing secret and the SQLite database."),
    Setting("public_url", str, "", "Base URL of returned image links (behind a proxy); default http://HOST:PORT."),
    Setting("auth", bool, True, "Require API keys. Turn off with --no-auth (a warning is logged).", "--auth/--no-auth"),
    Setting("retention_hours", float, 24.0, "How long generated images and their links stay valid."),
    Setting("sweep_interval_s", float, 600.0, "How often the sweeper deletes images past retention."),
    Setting(
        "signing_secret",
        str,
        "",
        "HMAC secret for file links, at least 32 bytes; default: generated once into DATA_DIR/secret.key.",
    ),
    Setting("max_prompt_chars", int, 4000, "Hard limit on prompt length in characters."),
    Setting(
        "max_body_bytes",
        int,
        64 * 1024 * 1024,
        "Largest accepted request body (JSON or multipart, references included); larger ones get a 400.",
    ),
    Setting("watermark_text", str, "AI生成", "Text of the visible watermark (glyphs must be in the shipped font)."),
    Setting("jpeg_quality", int, 90, "JPEG quality of delivered images (1-100; above 95 mostly makes files larger)."),
    Setting("reference_max_bytes", int, 10 * 1024 * 1024, "Largest accepted reference image, in bytes."),
    Setting(
        "reference_allowlist",
        str,
        "",
        "Comma-separated CIDRs/hosts that reference URLs may reach despite the private-address guard.",
    ),
    Setting("reference_timeout_s", float, 10.0, "Read timeout for fetching one reference URL."),
    Setting(
        "reference_decode_timeout_s",
        float,
        10.0,
        "Time budget for decoding one request's reference images; past it the request gets a 400 and its "
        "decoding is stopped.",
    ),
    Setting("reference_decode_workers", int, 2, "Worker processes that decode reference images (apart from encoding)."),
    Setting(
        "max_decoded_megapixels",
        float,
        200.0,
        "Server-wide budget of decoded reference pixels held by running jobs, in megapixels; past it new jobs "
        "get 429 ServerOverloaded.",
    ),
    Setting(
        "stream_send_timeout_s",
        float,
        30.0,
        "How long a client may take to read one event or response; past it the job is cancelled and its slot freed.",
    ),
    Setting(
        "http_read_timeout_s",
        float,
        30.0,
        "How long a client may take to send its request headers, or between chunks of its body; past it the "
        "connection is closed (headers) or the request gets a 400 (body).",
    ),
    Setting(
        "auth_failure_limit",
        int,
        20,
        "Failed authentications one client address may make per minute; past it it gets 429 for the rest of the "
        "minute.",
    ),
    Setting("metrics_token", str, "", "When set, GET /metrics requires Authorization: Bearer <this token>."),
    Setting(
        "model_source",
        str,
        "",
        "Shorthand for one diffusers model: a local diffusers directory or a cached hub id (instead of [[models]]).",
    ),
    Setting("model_name", str, "", "Name served for --model-source [default: doubao-seedream-4-0-250828 and aliases]."),
    Setting(
        "max_concurrency", int, 2, "Jobs (requests) generated at the same time per model; the rest wait in its queue."
    ),
    Setting(
        "max_queue",
        int,
        16,
        "Requests that may wait for a free engine slot, per model; past it new ones get 429 ServerOverloaded.",
    ),
    Setting(
        "shutdown_timeout_s",
        float,
        30.0,
        "On SIGTERM, how long in-flight requests may take to finish before they are cancelled.",
    ),
    Setting(
        "database_url",
        str,
        "",
        "Database for API keys and the usage ledger (SQLAlchemy URL, e.g. postgresql://user:pass@host/db); "
        "default: the SQLite file DATA_DIR/seedream.db.",
    ),
    Setting(
        "moderation_words",
        str,
        "",
        "Comma-separated words that refuse a prompt (400 InputTextSensitiveContentDetected).",
    ),
    Setting("moderation_words_file", str, "", "File of refused prompt words, one per line."),
    Setting(
        "moderation_image_check",
        str,
        "",
        "Per-image check as 'package.module:attribute' (an ImageCheck class or factory); refused outputs "
        "become OutputImageSensitiveContentDetected items.",
    ),
    Setting(
        "planner_url", str, "", "Base URL of an OpenAI-compatible chat API for the LLM group planner (off if empty)."
    ),
    Setting("planner_model", str, "", "Chat model name for the LLM group planner."),
    Setting("planner_api_key", str, "", "API key for the LLM group planner endpoint."),
    Setting("planner_timeout_s", float, 10.0, "Timeout of one LLM planner call; on failure the rule planner decides."),
    Setting("log_level", str, "info", "Log level: debug, info, warning, error or critical."),
)

_BY_NAME = {s.name: s for s in SETTINGS}

DEFAULT_MODEL = "doubao-seedream-4-0-250828"
DEFAULT_ALIASES = ("doubao-seedream-4.0", "seedream-4.0", "seedream-4-0")


@dataclass(frozen=True)
class ModelConfig:
    """One served model: its name, aliases, engine kind and engine-specific options."""

    name: str
    engine: str = "preview"
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


def default_models() -> tuple[ModelConfig, ...]:
    return (ModelConfig(name=DEFAULT_MODEL, engine="preview", aliases=DEFAULT_ALIASES),)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
MIN_SECRET_BYTES = 32  # the same bound as storage.signing's, which also checks a stored secret.key
# (setting, lowest, highest or None): inclusive bounds checked when Settings is built
_RANGES: tuple[tuple[str, float, float | None], ...] = (
    ("port", 1, 65535),
    ("max_concurrency", 1, None),
    ("max_queue", 0, None),  # 0: no waiting, a request beyond max_concurrency gets 429 at once
    ("jpeg_quality", 1, 100),
    ("max_prompt_chars", 1, None),
    ("max_body_bytes", 1024, None),
    ("reference_max_bytes", 1, None),
    ("shutdown_timeout_s", 0, None),
    ("reference_decode_workers", 1, None),
    ("auth_failure_limit", 1, None),
)
_POSITIVE = (
    "retention_hours",
    "sweep_interval_s",
    "reference_timeout_s",
    "planner_timeout_s",
    "reference_decode_timeout_s",
    "max_decoded_megapixels",
    "stream_send_timeout_s",
    "http_read_timeout_s",
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with :func:`load_settings`."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: str = "./data"
    public_url: str = ""
    auth: bool = True
    retention_hours: float = 24.0
    sweep_interval_s: float = 600.0
    signing_secret: str = ""
    max_prompt_chars: int = 4000
    max_body_bytes: int = 64 * 1024 * 1024
    watermark_text: str = "AI生成"
    jpeg_quality: int = 90
    reference_max_bytes: int = 10 * 1024 * 1024
    reference_allowlist: str = ""
    reference_timeout_s: float = 10.0
    reference_decode_timeout_s: float = 10.0
    reference_decode_workers: int = 2
    max_decoded_megapixels: float = 200.0
    stream_send_timeout_s: float = 30.0
    http_read_timeout_s: float = 30.0
    auth_failure_limit: int = 20
    metrics_token: str = ""
    model_source: str = ""
    model_name: str = ""
    max_concurrency: int = 2
    max_queue: int = 16
    shutdown_timeout_s: float = 30.0
    database_url: str = ""
    moderation_words: str = ""
    moderation_words_file: str = ""
    moderation_image_check: str = ""
    planner_url: str = ""
    planner_model: str = ""
    planner_api_key: str = ""
    planner_timeout_s: float = 10.0
    log_level: str = "info"
    models: tuple[ModelConfig, ...] = field(default_factory=default_models)

    def __post_init__(self) -> None:
        for name, low, high in _RANGES:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"setting {name!r}: must be a finite number, got {value!r}")
            if value < low or (high is not None and value > high):
                bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
                raise ValueError(f"setting {name!r}: must be {bounds}, got {value!r}")
        for name in _POSITIVE:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"setting {name!r}: must be a finite number above 0, got {value!r}")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"setting 'log_level': must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.signing_secret and len(self.signing_secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"setting 'signing_secret': must be at least {MIN_SECRET_BYTES} bytes, "
                f"got {len(self.signing_secret.encode())}"
            )
        seen: dict[str, str] = {}
        for model in self.models:
            for served in (model.name, *model.aliases):
                if served in seen:
                    raise ValueError(
                        f"config: model name or alias {served!r} is used twice (by {seen[served]!r} and "
                        f"{model.name!r}); each must be unique across all models"
                    )
                seen[served] = model.name

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def with_overrides(self, **values: Any) -> Settings:
        return replace(self, **{k: _coerce(_BY_NAME[k], v) for k, v in values.items() if k in _BY_NAME})


def _coerce(setting: Setting, value: Any) -> Any:
    if isinstance(value, setting.type):
        return value
    if setting.type is bool:
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"setting {setting.name!r}: expected a boolean, got {value!r}")
    try:
        return setting.type(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"setting {setting.name!r}: expected {setting.type.__name__}, got {value!r}") from exc


def _models_from_toml(entries: Any) -> tuple[ModelConfig, ...]:
    if not isinstance(entries, list) or not entries:
        raise ValueError("config: [[models]] must be a non-empty array of tables")
    models = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError(f"config: models[{i}] needs a string 'name'")
        options = {k: v for k, v in entry.items() if k not in {"name", "engine", "aliases"}}
        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ValueError(f"config: models[{i}].aliases must be a list of strings")
        models.append(
            ModelConfig(
                name=entry["name"],
                engine=str(entry.get("engine", "preview")),
                aliases=tuple(aliases),
                options=options,
            )
        )
    return tuple(models)


def load_settings(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Defaults <- TOML file (``[server]`` table and ``[[models]]``) <- ``SEEDREAM_*`` env <- overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    models: tuple[ModelConfig, ...] | None = None
    if config_file:
        with open(config_file, "rb") as fh:
            doc = tomllib.load(fh)
        server = doc.get("server", {})
        if not isinstance(server, dict):
            raise ValueError("config: [server] must be a table")
        for key, value in server.items():
            if key not in _BY_NAME:
                raise ValueError(f"config: unknown setting [server].{key}")
            values[key] = _coerce(_BY_NAME[key], value)
        if "models" in doc:
            models = _models_from_toml(doc["models"])
    for setting in SETTINGS:
        raw = env.get(f"SEEDREAM_{setting.name.upper()}")
        if raw is not None:
            values[setting.name] = _coerce(setting, raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _coerce(_BY_NAME[key], value)
    settings = Settings(**values)
    if settings.model_source:
        if models is not None:
            raise ValueError("config: --model-source serves one model; it cannot be combined with [[models]]")
        name = settings.model_name or DEFAULT_MODEL
        aliases = DEFAULT_ALIASES if name == DEFAULT_MODEL else ()
        options = {"source": settings.model_source}
        models = (ModelConfig(name=name, engine="diffusers", aliases=aliases, options=options),)
    if models is not None:
        settings = replace(settings, models=models)
    return settings


def setting_names() -> list[str]:
    return [f.name for f in fields(Settings) if f.name != "models"]


_missing = {s.name for s in SETTINGS} ^ set(setting_names())
if _missing:  # the table and the dataclass must describe the same settings
    raise RuntimeError(f"settings table and Settings disagree on: {sorted(_missing)}")
