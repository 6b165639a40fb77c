"""The ``seedream`` command: a thin shell over the app. ``serve`` options come from the settings table;
``keys`` and ``usage`` work on the key store and ledger of ``accounts.py``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .config import DEFAULT_MODEL, SETTINGS, Setting, Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

    from .accounts import AccountStore


def _option(setting: Setting) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    flag = setting.flag or "--" + setting.name.replace("_", "-")
    kind: Any = {int: int, float: float, str: str, bool: bool}[setting.type]
    text = f"{setting.help} [default: {setting.default!r}; env SEEDREAM_{setting.name.upper()}]"
    if setting.type is bool:
        return click.option(flag, setting.name, default=None, help=text)
    return click.option(flag, setting.name, type=kind, default=None, help=text)


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for setting in reversed(SETTINGS):
        func = _option(setting)(func)
    return click.option(
        "--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="TOML config file."
    )(func)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _load_settings(config_file: str | None, overrides: dict[str, Any]) -> Settings:
    """``load_settings``, with a bad setting or config file as a one-line error instead of a traceback."""
    try:
        return load_settings(config_file, overrides)
    except (ValueError, OSError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(__version__, prog_name="seedream")
def main() -> None:
    """seedream-server: a self-hosted Seedream 4.0 image generation API."""


@main.command()
@_settings_options
def serve(config_file: str | None, **overrides: Any) -> None:
    """Run the API server (the built-in preview engine when no models are configured)."""
    from .http import create_app
    from .http.server import run_server

    settings = _load_settings(config_file, overrides)
    _configure_logging(settings.log_level)
    log = logging.getLogger("seedream_server")
    for model in settings.models:
        aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
        note = " - PREVIEW engine: placeholder images, not a real model" if model.engine == "preview" else ""
        log.info("serving model %s on engine %s%s%s", model.name, model.engine, aliases, note)
    try:
        app = create_app(settings)
    except (ValueError, OSError) as exc:  # e.g. an unknown engine, a bad allowlist, an empty secret.key
        raise click.ClickException(f"cannot start the server: {exc}") from exc
    log.info("listening on http://%s:%d (links: %s)", settings.host, settings.port, settings.base_url)
    run_server(app, settings)


_BY_NAME = {s.name: s for s in SETTINGS}


def _some_settings(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--config plus the named settings' options (for commands that need only a few)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            func = _option(_BY_NAME[name])(func)
        return click.option(
            "--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="TOML config file."
        )(func)

    return decorate


_store_options = _some_settings("data_dir", "database_url")


@main.command()
@_some_settings("model_source", "model_name")
def models(config_file: str | None, **overrides: Any) -> None:
    """List the models the server would serve (from --config or --model-source), as JSON lines."""
    settings = _load_settings(config_file, overrides)
    for model in settings.models:
        click.echo(json.dumps({"id": model.name, "engine": model.engine, "aliases": list(model.aliases)}))


def _open_store(config_file: str | None, overrides: dict[str, Any]) -> AccountStore:
    from .accounts import AccountStore

    settings = _load_settings(config_file, overrides)
    try:
        return AccountStore.open(settings.data_dir, settings.database_url)
    except Exception as exc:
        raise click.ClickException(f"cannot open the key store: {exc}") from exc


def _console() -> Console:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"


@main.group()
def keys() -> None:
    """Manage API keys: create (printed once), list (never shows keys), revoke."""


@keys.command("create")
@click.option("--name", required=True, help="Unique name of the key (shown in listings and the usage ledger).")
@click.option("--ipm", type=click.IntRange(min=1), default=500, show_default=True, help="Images per minute.")
@click.option("--models", default="", help="Comma-separated model names or aliases the key may use [default: all].")
@_store_options
def keys_create(name: str, ipm: int, models: str, config_file: str | None, **overrides: Any) -> None:
    """Create a key and print it as the last line of stdout. Only its hash is stored."""
    from .accounts import AccountError

    known = {n for m in _load_settings(config_file, overrides).models for n in (m.name, *m.aliases)}
    unknown = sorted({m.strip() for m in models.split(",") if m.strip()} - known)
    if unknown:
        click.echo(f"warning: not served with this configuration: {', '.join(unknown)}", err=True)
    store = _open_store(config_file, overrides)
    try:
        key, secret = store.create_key(name, ipm=ipm, models=models.split(","))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    listed = ", ".join(key.models) or "all"
    click.echo(f"Created API key {key.name!r} (images per minute: {key.ipm}; models: {listed}).", err=True)
    click.echo("It is shown once, on the next line of stdout: store it now.", err=True)
    click.echo(secret)


@keys.command("list")
@_store_options
def keys_list(config_file: str | None, **overrides: Any) -> None:
    """List keys: name, prefix, limit, models, created, revoked (never the keys themselves)."""
    from rich.markup import escape
    from rich.table import Table

    store = _open_store(config_file, overrides)
    try:
        rows = store.list_keys()
    finally:
        store.close()
    table = Table("name", "prefix", "ipm", "models", "created", "revoked")
    for key in rows:
        models = ", ".join(key.models) or "all"
        cells = (key.name, key.prefix + "…", str(key.ipm), models)
        table.add_row(*(escape(c) for c in cells), _when(key.created_at), _when(key.revoked_at))
    _console().print(table if rows else "No API keys.")


@keys.command("revoke")
@click.argument("name")
@_store_options
def keys_revoke(name: str, config_file: str | None, **overrides: Any) -> None:
    """Revoke the key NAME: its requests get 401 from then on."""
    from .accounts import AccountError

    store = _open_store(config_file, overrides)
    try:
        key = store.revoke_key(name)
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    click.echo(f"Revoked API key {key.name!r} ({key.prefix}…).")


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``1h``, ``24h``, ``7d`` (ago), or an ISO date/time (UTC unless it carries an offset)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(value.strip().lower())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: expected a duration (30m, 1h, 24h, 7d) or a date (2026-11-01)") from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


@main.command()
@click.option("--since", help="Only requests since: a duration ago (1h, 24h, 7d) or a date/time (2026-11-01), UTC.")
@click.option("--key", "key_name", help="Only this key's requests ('-' for requests made with --no-auth).")
@_store_options
def usage(since: str | None, key_name: str | None, config_file: str | None, **overrides: Any) -> None:
    """Summarise the usage ledger per key and model: requests, images, tokens, errors."""
    from rich.markup import escape
    from rich.table import Table

    start = parse_since(since) if since else None
    store = _open_store(config_file, overrides)
    try:
        rows = store.usage_summary(start, key_name)
    finally:
        store.close()
    title = f"Usage since {_when(start)}" if start else "Usage (all time)"
    if not rows:
        _console().print(f"{title}: no requests recorded.")
        return
    table = Table("key", "model", title=title)
    for column in ("requests", "images", "tokens", "errors", "cancelled"):
        table.add_column(column, justify="right")
    for row in rows:
        numbers = (row.requests, row.images, row.tokens, row.errors, row.cancelled)
        # names come from the ledger as recorded: "[/x]" must print as text, not be read as Rich markup
        table.add_row(escape(row.key_name), escape(row.model), *(f"{n:,}" for n in numbers))
    if len(rows) > 1:
        totals = [sum(getattr(r, f) for r in rows) for f in ("requests", "images", "tokens", "errors", "cancelled")]
        table.add_section()
        table.add_row("total", "", *(f"{n:,}" for n in totals))
    _console().print(table)


@main.command()
@click.argument("prompt")
@click.option("-i", "--image", "images", multiple=True, help="Reference image: a file, an http(s) URL or a data URI.")
@click.option("--size", default="2K", show_default=True, help="1K, 2K, 4K or <W>x<H>.")
@click.option("--max-images", type=click.IntRange(1, 15), help="Group size cap (1 = a single image) [default: 15].")
@click.option("--seed", type=int, default=-1, show_default=True, help="-1 = random.")
@click.option("--watermark/--no-watermark", default=True, show_default=True, help="Visible AI生成 mark.")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Directory the images are saved in, as <index>.jpeg.",
)
@click.option("--server", help="Server URL, e.g. http://127.0.0.1:8000 [default: an in-process preview engine].")
@click.option("--api-key", envvar="SEEDREAM_API_KEY", help="Bearer key for --server (env SEEDREAM_API_KEY).")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model name or alias to ask for.")
def generate(
    prompt: str,
    images: tuple[str, ...],
    size: str,
    max_images: int | None,
    seed: int,
    watermark: bool,
    out_dir: str,
    server: str | None,
    api_key: str | None,
    model: str,
) -> None:
    """Generate images for PROMPT, streaming them into --out as they arrive (groups in auto mode)."""
    import asyncio

    from rich.markup import escape
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .client import GenerateOptions, Saved
    from .client import generate as run_generate

    options = GenerateOptions(
        prompt=prompt,
        model=model,
        references=list(images),
        size=size,
        max_images=max_images,
        seed=seed,
        watermark=watermark,
        out_dir=Path(out_dir),
        server=server,
        api_key=api_key,
    )
    _configure_logging("error")  # the in-process app's start-up notes are not for this command's user
    console = _console()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} images"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("generating", total=max_images)

        def report(item: Saved) -> None:
            progress.advance(task)
            if item.path is not None:
                progress.console.print(f"[green]#{item.index}[/] {escape(str(item.size))} -> {escape(str(item.path))}")
            else:
                progress.console.print(f"[red]#{item.index}[/] failed: {escape(str(item.error))}")

        try:
            saved = asyncio.run(run_generate(options, report))
        except (RuntimeError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
    done = sum(1 for item in saved if item.path is not None)
    console.print(f"{done} of {len(saved)} images saved in {escape(str(options.out_dir))}")


if __name__ == "__main__":  # pragma: no cover
    main()
