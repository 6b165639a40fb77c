"""``seedream generate``: stream a request to a server (or an in-process one) and save the images as they
arrive. A folder holding an earlier run's images is refused unless ``--overwrite``; a server that cannot be
reached, or that refuses the request, is one line ``Error: ...``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..config import DEFAULT_MODEL
from .common import console

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def _progress(out: Console) -> Progress:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} images"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    )


@click.command()
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
    help="Directory the images are saved in, as <index>.<format>; it must hold no earlier run's images.",
)
@click.option("--overwrite", is_flag=True, help="Delete an earlier run's images in --out first.")
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
    overwrite: bool,
    server: str | None,
    api_key: str | None,
    model: str,
) -> None:
    """Generate images for PROMPT, streaming them into --out as they arrive (groups in auto mode)."""
    import asyncio

    from rich.markup import escape

    from ..client import GenerateError, GenerateOptions, Saved
    from ..client import generate as run_generate
    from ..logs import configure_logging

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
        overwrite=overwrite,
    )
    configure_logging("error")  # the in-process app's start-up notes are not for this command's user
    out = console()
    with _progress(out) as progress:
        task = progress.add_task("generating", total=max_images)

        def report(item: Saved) -> None:
            progress.advance(task)
            if item.path is not None:
                progress.console.print(f"[green]#{item.index}[/] {escape(str(item.size))} -> {escape(str(item.path))}")
            else:
                progress.console.print(f"[red]#{item.index}[/] failed: {escape(str(item.error))}")

        try:
            saved = asyncio.run(run_generate(options, report))
        except (GenerateError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
    done = sum(1 for item in saved if item.path is not None)
    noun = "image" if len(saved) == 1 else "images"
    out.print(f"{done} of {len(saved)} {noun} saved in {escape(str(options.out_dir))}")
