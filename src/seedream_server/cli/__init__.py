"""The ``seedream`` command: a thin shell over the app. ``serve`` options come from the settings table;
``keys`` and ``usage`` work on the key store and ledger of ``accounts/``; ``generate`` is a streaming client.

Every expected failure ends as one line ``Error: ...`` on stderr with exit code 1; ``seedream --debug``
prints the traceback as well.
"""

from __future__ import annotations

import traceback
from typing import Any

import click

from .. import __version__
from .accounts import keys, parse_since, usage
from .common import DEBUG, one_line
from .generate import generate
from .serve import models, serve

__all__ = ["main", "parse_since"]


class _Main(click.Group):
    """Turns any failure of a command into one line ``Error: ...`` (exit 1) unless ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.UsageError):
            raise
        except click.ClickException as exc:
            if ctx.meta.get(DEBUG) and exc.__cause__ is not None:
                traceback.print_exception(exc.__cause__)
            if "\n" not in exc.message:
                raise
            raise click.ClickException(one_line(exc.message)) from exc.__cause__
        except Exception as exc:
            if ctx.meta.get(DEBUG):
                raise
            reason = one_line(str(exc)) or type(exc).__name__
            raise click.ClickException(f"{reason} (seedream --debug ... shows the traceback)") from exc


@click.group(cls=_Main)
@click.version_option(__version__, prog_name="seedream")
@click.option("--debug", is_flag=True, help="Print the traceback of a failure (otherwise one line: Error: ...).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """seedream-server: a self-hosted Seedream image generation API."""
    ctx.meta[DEBUG] = debug


for _command in (serve, models, keys, usage, generate):
    main.add_command(_command)
