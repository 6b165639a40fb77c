"""What the commands share: options from the settings table, settings loading with one-line errors, the
console, and the ``--debug`` flag that decides between one-line errors and tracebacks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from ..config import SETTINGS, Setting, Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

DEBUG = "seedream.debug"  # ctx.meta key: --debug was given
_BY_NAME = {s.name: s for s in SETTINGS}


def debugging() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.meta.get(DEBUG))


def one_line(text: str) -> str:
    return " ".join(text.split())


def _config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="TOML config file."
    )(func)


def option(setting: Setting) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    flag = setting.flag or "--" + setting.name.replace("_", "-")
    kind: Any = {int: int, float: float, str: str, bool: bool}[setting.type]
    text = f"{setting.help} [default: {setting.default!r}; env SEEDREAM_{setting.name.upper()}]"
    if setting.type is bool:
        return click.option(flag, setting.name, default=None, help=text)
    return click.option(flag, setting.name, type=kind, default=None, help=text)


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--config plus an option per setting (``serve``)."""
    for setting in reversed(SETTINGS):
        func = option(setting)(func)
    return _config_option(func)


def some_settings(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--config plus the named settings' options (for commands that need only a few); the rest still come
    from the config file and ``SEEDREAM_*``, as for ``serve``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            func = option(_BY_NAME[name])(func)
        return _config_option(func)

    return decorate


def load(config_file: str | None, overrides: dict[str, Any]) -> Settings:
    """``load_settings``, with a bad setting or config file as a one-line error instead of a traceback."""
    try:
        return load_settings(config_file, overrides)
    except (ValueError, OSError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise click.ClickException(str(exc)) from exc


def console() -> Console:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "-"
