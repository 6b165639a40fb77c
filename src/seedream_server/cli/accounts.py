"""``seedream keys`` and ``seedream usage``: the key store and the usage ledger of ``accounts/``.

They open the database ``seedream serve`` uses with the same settings (``--config``, ``SEEDREAM_*``,
``--data-dir``, ``--database-url``), say on stderr which one they opened, and only ``keys create`` may
create it: listing, revoking or summarising an empty place is a one-line error, not a new empty database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .common import console, load, some_settings, when

if TYPE_CHECKING:
    from ..accounts import AccountStore

store_options = some_settings("data_dir", "database_url")
SAME_AS_SERVE = "use the --config / SEEDREAM_* / --data-dir / --database-url that `seedream serve` uses"


def open_store(config_file: str | None, overrides: dict[str, Any], *, create: bool) -> AccountStore:
    """The key store of these settings, named on stderr. Unless ``create``, one that does not exist yet (no
    SQLite file, or a database without our tables) is refused rather than created empty."""
    from ..accounts import AccountStore, redact_url, resolve_database_url

    settings = load(config_file, overrides)
    url = resolve_database_url(settings.data_dir, settings.database_url)
    shown = redact_url(url)
    sqlite_file = None if settings.database_url else Path(settings.data_dir).resolve() / "seedream.db"
    missing = f"no key store at {sqlite_file or shown}: nothing was created there yet; {SAME_AS_SERVE}"
    if not create and sqlite_file is not None and not sqlite_file.exists():
        raise click.ClickException(missing)
    click.echo(f"key store: {shown}", err=True)
    try:
        store = AccountStore(url)
        if not create and store.schema_version() == 0:
            store.close()
            raise click.ClickException(missing)
        store.migrate()
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(f"cannot open the key store {shown}: {exc}") from exc
    return store


@click.group()
def keys() -> None:
    """Manage API keys: create (printed once), list (never shows keys), revoke."""


@keys.command("create")
@click.option("--name", required=True, help="Unique name of the key (shown in listings and the usage ledger).")
@click.option("--ipm", type=click.IntRange(min=1), default=500, show_default=True, help="Images per minute.")
@click.option("--models", default="", help="Comma-separated model names or aliases the key may use [default: all].")
@store_options
def keys_create(name: str, ipm: int, models: str, config_file: str | None, **overrides: Any) -> None:
    """Create a key and print it as the last line of stdout. Only its hash is stored."""
    from ..accounts import AccountError

    known = {n for m in load(config_file, overrides).models for n in (m.name, *m.aliases)}
    unknown = sorted({m.strip() for m in models.split(",") if m.strip()} - known)
    if unknown:
        click.echo(f"warning: not served with this configuration: {', '.join(unknown)}", err=True)
    store = open_store(config_file, overrides, create=True)
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
@store_options
def keys_list(config_file: str | None, **overrides: Any) -> None:
    """List keys: name, prefix, limit, models, created, revoked (never the keys themselves)."""
    from rich.markup import escape
    from rich.table import Table

    store = open_store(config_file, overrides, create=False)
    try:
        rows = store.list_keys()
    finally:
        store.close()
    table = Table("name", "prefix", "ipm", "models", "created", "revoked")
    for key in rows:
        models = ", ".join(key.models) or "all"
        cells = (key.name, key.prefix + "…", str(key.ipm), models)
        table.add_row(*(escape(c) for c in cells), when(key.created_at), when(key.revoked_at))
    console().print(table if rows else "No API keys.")


@keys.command("revoke")
@click.argument("name")
@store_options
def keys_revoke(name: str, config_file: str | None, **overrides: Any) -> None:
    """Revoke the key NAME: its requests get 401 from then on."""
    from ..accounts import AccountError

    store = open_store(config_file, overrides, create=False)
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


@click.command()
@click.option("--since", help="Only requests since: a duration ago (1h, 24h, 7d) or a date/time (2026-11-01), UTC.")
@click.option(
    "--key", "key_name", help="Only this key's requests ('-': requests made with --no-auth, or refused with 401)."
)
@store_options
def usage(since: str | None, key_name: str | None, config_file: str | None, **overrides: Any) -> None:
    """Summarise the usage ledger per key and model: requests, images, tokens, errors."""
    from rich.markup import escape
    from rich.table import Table

    start = parse_since(since) if since else None
    store = open_store(config_file, overrides, create=False)
    try:
        rows = store.usage_summary(start, key_name)
    finally:
        store.close()
    title = f"Usage since {when(start)}" if start else "Usage (all time)"
    if not rows:
        console().print(f"{title}: no requests recorded.")
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
    console().print(table)
