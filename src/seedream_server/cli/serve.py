"""``seedream serve`` and ``seedream models``. A server that cannot start (an unknown engine, a missing extra,
a missing model folder, a hub id not in the cache) ends with one line ``Error: cannot start the server: ...``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import click

from ..logs import configure_logging
from .common import debugging, load, settings_options, some_settings

if TYPE_CHECKING:
    from fastapi import FastAPI


@click.command()
@settings_options
def serve(config_file: str | None, **overrides: Any) -> None:
    """Run the API server (the built-in preview engine when no models are configured)."""
    from ..http import create_app
    from ..http.server import run_server

    settings = load(config_file, overrides)
    configure_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("seedream_server")
    for model in settings.models:
        aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
        note = " - PREVIEW engine: placeholder images, not a real model" if model.engine == "preview" else ""
        log.info("serving model %s on engine %s%s%s", model.name, model.engine, aliases, note)
    try:  # an unknown engine, a missing extra or model folder, a bad allowlist, an empty secret.key
        app = create_app(settings)
    except Exception as exc:
        raise click.ClickException(f"cannot start the server: {exc}") from exc
    failures = _watch_startup(app, quiet=not debugging())
    log.info("listening on http://%s:%d (links: %s)", settings.host, settings.port, settings.base_url)
    try:
        run_server(app, settings)
    except SystemExit:  # uvicorn exits when the app's start-up (engines loading their weights) fails
        if failures:
            raise click.ClickException(f"cannot start the server: {failures[0]}") from failures[0]
        raise


def _watch_startup(app: FastAPI, quiet: bool) -> list[BaseException]:
    """Catch what the app's start-up raises (engines load in its lifespan: an uncached hub id fails there) for
    ``serve`` to end with one line; when ``quiet``, uvicorn's logged traceback of it is left out."""
    failures: list[BaseException] = []
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        started = False
        try:
            async with inner(target) as state:
                started = True
                yield state
        except Exception as exc:
            if not started:
                failures.append(exc)
            raise

    app.router.lifespan_context = lifespan

    def keep(record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (failures and (text.startswith("Traceback") or text.startswith("Application startup failed")))

    if quiet:
        logging.getLogger("uvicorn.error").addFilter(keep)
    return failures


@click.command()
@some_settings("model_source", "model_name")
def models(config_file: str | None, **overrides: Any) -> None:
    """List the models the server would serve (from --config or --model-source), as JSON lines."""
    settings = load(config_file, overrides)
    for model in settings.models:
        click.echo(json.dumps({"id": model.name, "engine": model.engine, "aliases": list(model.aliases)}))
