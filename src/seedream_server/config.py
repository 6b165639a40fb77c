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
from typing import Any, get_type_hints

from .profiles import PROFILES


@dataclass(frozen=True)
class Setting:
    """One row of the settings table, read from a field of :class:`Settings`."""

    name: str
    type: type
    default: Any
    help: str
    flag: str | None = None  # CLI flag when it differs from --name-with-dashes
    low: float | None = None  # inclusive bounds checked when Settings is built
    high: float | None = None
    positive: bool = False  # a finite number above 0


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    low: float | None = None,
    high: float | None = None,
    positive: bool = False,
) -> Any:
    """A field of :class:`Settings` with its row of the settings table (help, flag, bounds) as metadata."""
    meta = {"help": help, "flag": flag, "low": low, "high": high, "positive": positive}
    return field(default=default, metadata=meta)


DEFAULT_MODEL = "doubao-seedream-4-0-250828"
DEFAULT_ALIASES = ("doubao-seedream-4.0", "seedream-4.0", "seedream-4-0")


@dataclass(frozen=True)
class ModelConfig:
    """One served model: its name, aliases, engine kind, Seedream profile and engine-specific options."""

    name: str
    engine: str = "preview"
    aliases: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    profile: str = ""  # a profile name or model id; default: the profile the name or an alias is an id of, else 4.0


def default_models() -> tuple[ModelConfig, ...]:
    """With no models configured: the preview engine under every Seedream profile's ids."""
    models = []
    for profile in PROFILES:
        name, *others = profile.ids
        aliases = (*DEFAULT_ALIASES, *others) if name == DEFAULT_MODEL else tuple(others)
        models.append(ModelConfig(name=name, engine="preview", aliases=aliases, profile=profile.name))
    return tuple(models)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
MIN_SECRET_BYTES = 32  # the same bound as storage.signing's, which also checks a stored secret.key


@dataclass(frozen=True)
class Settings:
    """Resolved settings, and THE settings table: each field's metadata holds its help text, flag and
    bounds (:data:`SETTINGS` is read from here). Build with :func:`load_settings`."""

    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8000, "Port to listen on.", low=1, high=65535)
    data_dir: str = setting("./data", "Directory for images, the signing secret and the SQLite database.")
    public_url: str = setting("", "Base URL of returned image links (behind a proxy); default http://HOST:PORT.")
    auth: bool = setting(
        True, "Require API keys. Turn off with --no-auth (a warning is logged).", flag="--auth/--no-auth"
    )
    retention_hours: float = setting(24.0, "How long generated images and their links stay valid.", positive=True)
    sweep_interval_s: float = setting(600.0, "How often the sweeper deletes images past retention.", positive=True)
    storage: str = setting(
        "",
        "Where images are stored: empty for DATA_DIR/images, or s3://BUCKET/PREFIX for an S3-compatible bucket "
        "(credentials from the standard AWS chain).",
    )
    s3_endpoint_url: str = setting("", "Endpoint of an S3-compatible store (MinIO, R2, OSS, TOS, Ceph); empty for AWS.")
    s3_url_mode: str = setting(
        "presigned",
        "How url responses point at S3 images: presigned (GET URLs of the bucket) or proxy (this server's signed "
        "/files links, streamed from the bucket, for buckets clients cannot reach).",
    )
    url_ttl: float = setting(24.0, "How long returned image links stay valid, in hours.", positive=True)
    ray_address: str = setting(
        "",
        'Ray cluster for models with executor = "ray": auto, ray://host:10001, or empty for a local Ray started '
        "on demand.",
    )
    signing_secret: str = setting(
        "", "HMAC secret for file links, at least 32 bytes; default: generated once into DATA_DIR/secret.key."
    )
    max_prompt_chars: int = setting(4000, "Hard limit on prompt length in characters.", low=1)
    max_body_bytes: int = setting(
        64 * 1024 * 1024,
        "Largest accepted request body (JSON or multipart, references included); larger ones get a 400.",
        low=1024,
    )
    watermark_text: str = setting("AI生成", "Text of the visible watermark (glyphs must be in the shipped font).")
    jpeg_quality: int = setting(
        90, "JPEG quality of delivered images (1-100; above 95 mostly makes files larger).", low=1, high=100
    )
    reference_max_bytes: int = setting(10 * 1024 * 1024, "Largest accepted reference image, in bytes.", low=1)
    reference_allowlist: str = setting(
        "", "Comma-separated CIDRs/hosts that reference URLs may reach despite the private-address guard."
    )
    reference_timeout_s: float = setting(10.0, "Read timeout for fetching one reference URL.", positive=True)
    reference_decode_timeout_s: float = setting(
        10.0,
        "Time budget for decoding one request's reference images; past it the request gets a 400 and its "
        "decoding is stopped.",
        positive=True,
    )
    reference_decode_workers: int = setting(
        2, "Worker processes that decode reference images (apart from encoding).", low=1
    )
    max_decoded_megapixels: float = setting(
        200.0,
        "Server-wide budget of decoded reference pixels held by running jobs, in megapixels; past it new "
        "jobs get 429 ServerOverloaded.",
        positive=True,
    )
    stream_send_timeout_s: float = setting(
        30.0,
        "How long a client may take to read one event or response; past it the job is cancelled and its slot freed.",
        positive=True,
    )
    http_read_timeout_s: float = setting(
        30.0,
        "How long a client may take to send its request headers, or between chunks of its body; past it the "
        "connection is closed (headers) or the request gets a 400 (body).",
        positive=True,
    )
    auth_failure_limit: int = setting(
        20,
        "Failed authentications one client address may make per minute; past it it gets 429 for the rest of "
        "the minute.",
        low=1,
    )
    metrics_token: str = setting("", "When set, GET /metrics requires Authorization: Bearer <this token>.")
    model_source: str = setting(
        "", "Shorthand for one diffusers model: a local diffusers directory or a cached hub id (instead of [[models]])."
    )
    model_name: str = setting("", "Name served for --model-source [default: doubao-seedream-4-0-250828 and aliases].")
    max_concurrency: int = setting(
        2, "Jobs (requests) generated at the same time per model; the rest wait in its queue.", low=1
    )
    max_queue: int = setting(
        16,
        "Requests that may wait for a free engine slot, per model; past it new ones get 429 ServerOverloaded.",
        low=0,
    )
    shutdown_timeout_s: float = setting(
        30.0, "On SIGTERM, how long in-flight requests may take to finish before they are cancelled.", low=0
    )
    database_url: str = setting(
        "",
        "Database for API keys and the usage ledger (SQLAlchemy URL, e.g. postgresql://user:pass@host/db); "
        "default: the SQLite file DATA_DIR/seedream.db.",
    )
    moderation_words: str = setting(
        "", "Comma-separated words that refuse a prompt (400 InputTextSensitiveContentDetected)."
    )
    moderation_words_file: str = setting("", "File of refused prompt words, one per line.")
    moderation_image_check: str = setting(
        "",
        "Per-image check as 'package.module:attribute' (an ImageCheck class or factory); refused outputs "
        "become OutputImageSensitiveContentDetected items.",
    )
    web_search: str = setting(
        "",
        'Web-search plug-in for tools: [{"type": "web_search"}] as \'package.module:attribute\' (a WebSearch class '
        "or factory); without one the model does not search (tool_usage.web_search = 0).",
    )
    planner_url: str = setting(
        "", "Base URL of an OpenAI-compatible chat API for the LLM group planner (off if empty)."
    )
    planner_model: str = setting("", "Chat model name for the LLM group planner.")
    planner_api_key: str = setting("", "API key for the LLM group planner endpoint.")
    planner_timeout_s: float = setting(
        10.0, "Timeout of one LLM planner call; on failure the rule planner decides.", positive=True
    )
    log_level: str = setting("info", "Log level: debug, info, warning, error or critical.")
    log_format: str = setting("text", "Log lines as text (key=value) or json (one JSON object per line).")
    models: tuple[ModelConfig, ...] = field(default_factory=default_models)
    #: ``[[profiles]]`` tables of the config file: fields that change (or define) Seedream profiles
    profile_overrides: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        for row in SETTINGS:
            _check_range(row, getattr(self, row.name))
        if self.log_level.lower() not in LOG_LEVELS:
            raise ValueError(f"setting 'log_level': must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"setting 'log_format': must be text or json, got {self.log_format!r}")
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


def _read_table() -> tuple[Setting, ...]:
    hints = get_type_hints(Settings)
    return tuple(
        Setting(name=f.name, type=hints[f.name], default=f.default, **f.metadata)
        for f in fields(Settings)
        if f.name not in {"models", "profile_overrides"}
    )


#: the settings table, in declaration order: CLI options, environment variables and docs come from it
SETTINGS: tuple[Setting, ...] = _read_table()
_BY_NAME = {s.name: s for s in SETTINGS}


def _check_range(row: Setting, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"setting {row.name!r}: must be a finite number, got {value!r}")
    if row.positive and not value > 0:
        raise ValueError(f"setting {row.name!r}: must be a finite number above 0, got {value!r}")
    too_low = row.low is not None and value < row.low
    if too_low or (row.high is not None and value > row.high):
        bounds = f"from {row.low} to {row.high}" if row.high is not None else f"at least {row.low}"
        raise ValueError(f"setting {row.name!r}: must be {bounds}, got {value!r}")


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
        options = {k: v for k, v in entry.items() if k not in {"name", "engine", "aliases", "profile"}}
        aliases = entry.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ValueError(f"config: models[{i}].aliases must be a list of strings")
        models.append(
            ModelConfig(
                name=entry["name"],
                engine=str(entry.get("engine", "preview")),
                aliases=tuple(aliases),
                options=options,
                profile=str(entry.get("profile", "")),
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
    values_profiles: tuple[dict[str, Any], ...] = ()
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
        profile_overrides = doc.get("profiles", [])
        if not isinstance(profile_overrides, list):
            raise ValueError("config: [[profiles]] must be an array of tables")
        values_profiles = tuple(profile_overrides)
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
    if values_profiles:
        settings = replace(settings, profile_overrides=values_profiles)
    return settings


def setting_names() -> list[str]:
    return [row.name for row in SETTINGS]
