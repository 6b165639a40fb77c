"""The ``seedream`` command: a thin shell over the app. ``serve`` options come from the settings table."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .config import SETTINGS, Setting, load_settings


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


@click.group()
@click.version_option(__version__, prog_name="seedream")
def main() -> None:
    """seedream-server: a self-hosted Seedream 4.0 image generation API."""


@main.command()
@_settings_options
def serve(config_file: str | None, **overrides: Any) -> None:
    """Run the API server (the built-in preview engine when no models are configured)."""
    import uvicorn

    from .app import create_app

    settings = load_settings(config_file, overrides)
    _configure_logging(settings.log_level)
    log = logging.getLogger("seedream_server")
    for model in settings.models:
        aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
        note = " - PREVIEW engine: placeholder images, not a real model" if model.engine == "preview" else ""
        log.info("serving model %s on engine %s%s%s", model.name, model.engine, aliases, note)
    app = create_app(settings)
    log.info("listening on http://%s:%d (links: %s)", settings.host, settings.port, settings.base_url)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)


@main.command()
@_settings_options
def models(config_file: str | None, **overrides: Any) -> None:
    """List the models the server would serve, as JSON lines."""
    settings = load_settings(config_file, overrides)
    for model in settings.models:
        click.echo(json.dumps({"id": model.name, "engine": model.engine, "aliases": list(model.aliases)}))


if __name__ == "__main__":  # pragma: no cover
    main()
