"""The ``seedream generate`` client: streams a request and saves each image as it arrives.

It talks to a running server over HTTP, or — with no server URL — to an in-process app on the
same code path (ASGI transport), so the command works on a laptop with nothing else running.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .references import sniff_format
from .sse import SSEDecoder


@dataclass
class GenerateOptions:
    prompt: str
    model: str
    references: list[str] = field(default_factory=list)
    size: str = "2K"
    max_images: int | None = None
    seed: int = -1
    watermark: bool = True
    out_dir: Path = Path(".")
    server: str | None = None
    api_key: str | None = None
    overwrite: bool = False


class GenerateError(RuntimeError):
    """An expected failure of ``seedream generate`` (server unreachable, refused, output folder in use): the
    command prints its message as one line."""


#: the files a run writes (``<index>.<format>``): a folder holding some is an earlier run's output
_IMAGE_FILE = re.compile(r"^\d+\.(jpeg|jpg|png|webp)$")


def earlier_images(out_dir: Path) -> list[Path]:
    """The images of an earlier run in ``out_dir`` (empty when it does not exist)."""
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if _IMAGE_FILE.match(p.name))


def prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Create ``out_dir``; refuse one that holds an earlier run's images, or with ``overwrite`` delete them
    first, so a run never overwrites files silently nor mixes its images with another run's."""
    found = earlier_images(out_dir)
    if found and not overwrite:
        names = ", ".join(p.name for p in found[:3]) + (", …" if len(found) > 3 else "")
        raise GenerateError(
            f"{out_dir} already holds images of an earlier run ({names}); choose another --out folder, "
            "or pass --overwrite to replace them"
        )
    for path in found:
        path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Saved:
    index: int
    path: Path | None
    size: str | None
    error: str | None = None


def reference_value(ref: str) -> str:
    """URLs and data URIs pass through; a local file becomes a data URI with its sniffed format."""
    if ref.startswith(("http://", "https://", "data:")):
        return ref
    try:
        data = Path(ref).read_bytes()
    except OSError as exc:
        raise GenerateError(f"cannot read the reference image {ref}: {exc.strerror or exc}") from exc
    return f"data:image/{sniff_format(data)};base64,{base64.b64encode(data).decode('ascii')}"


def request_body(options: GenerateOptions) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": options.model,
        "prompt": options.prompt,
        "size": options.size,
        "seed": options.seed,
        "watermark": options.watermark,
        "response_format": "b64_json",
        "stream": True,
        "sequential_image_generation": "auto" if options.max_images != 1 else "disabled",
    }
    if options.max_images:
        body["sequential_image_generation_options"] = {"max_images": options.max_images}
    if options.references:
        body["image"] = [reference_value(r) for r in options.references]
    return body


async def _events(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    try:
        async with client.stream("POST", path, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                try:
                    error = response.json()["error"]
                    message = f"{error['code']}: {error['message']}"
                except (ValueError, KeyError, TypeError):
                    message = response.text[:200]
                raise GenerateError(f"HTTP {response.status_code} {message}")
            decoder = SSEDecoder()
            async for chunk in response.aiter_text():
                for event in decoder.feed(chunk):
                    if event.data == "[DONE]":
                        return
                    yield json.loads(event.data)
    except httpx.TransportError as exc:  # refused, reset, DNS, timeout: the server is down or unreachable
        reason = str(exc) or type(exc).__name__
        raise GenerateError(f"cannot reach the server at {client.base_url}: {reason}") from exc


@contextlib.asynccontextmanager
async def _client(options: GenerateOptions) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    if options.server:
        async with httpx.AsyncClient(base_url=options.server.rstrip("/"), headers=headers, timeout=600) as c:
            yield c
        return
    from .config import load_settings
    from .http import create_app

    with tempfile.TemporaryDirectory(prefix="seedream-") as tmp:
        app = create_app(load_settings(overrides={"data_dir": tmp, "auth": False}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://in-process", timeout=600) as c:
                yield c


def _save(out_dir: Path, event: dict[str, Any]) -> Saved:
    """Write one image as ``<index>.<format>``; never over an existing file."""
    data = base64.b64decode(event["b64_json"])
    path = out_dir / f"{event['image_index']}.{sniff_format(data)}"
    with path.open("xb") as fh:  # exclusive: a file that appeared since the folder was checked is not replaced
        fh.write(data)
    return Saved(event["image_index"], path, event.get("size"))


async def generate(options: GenerateOptions, on_event: Callable[[Saved], None] | None = None) -> list[Saved]:
    """Stream the request; save each image to ``out_dir/<index>.<format>`` as soon as its event arrives.
    The folder must hold no earlier run's images unless ``options.overwrite`` (then they are deleted first)."""
    body = request_body(options)
    prepare_out_dir(options.out_dir, options.overwrite)
    saved: list[Saved] = []
    async with _client(options) as client:
        async for event in _events(client, "/api/v3/images/generations", body):
            kind = event.get("type")
            if kind == "image_generation.partial_succeeded":
                item = _save(options.out_dir, event)
            elif kind == "image_generation.partial_failed":
                item = Saved(event["image_index"], None, None, event["error"]["code"])
            elif "error" in event:
                raise GenerateError(f"{event['error']['code']}: {event['error']['message']}")
            else:
                continue
            saved.append(item)
            if on_event is not None:
                on_event(item)
    return saved
