"""What the upstream-engine tests share: a gateway (``seedream serve`` with ark/openai models in a TOML
config) in front of a second ``seedream serve`` (preview engine) playing the upstream.

Importable (not a conftest): ``from upstream_support import gateway, write_config, pixels``.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from conftest import LiveServer, start_server

#: a prompt the rule planner reads as a group of four images
GROUP_OF_4 = "生成4张女孩和奶牛玩偶在游乐园开心地坐过山车的图片，涵盖早晨、中午、下午、晚上"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def write_config(path: Path, models: list[dict[str, Any]], server: dict[str, Any] | None = None) -> Path:
    """A TOML config with a ``[server]`` table and one ``[[models]]`` table per entry."""
    lines = ["[server]", *(f"{k} = {toml_value(v)}" for k, v in (server or {}).items()), ""]
    for model in models:
        lines += ["[[models]]", *(f"{k} = {toml_value(v)}" for k, v in model.items()), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def gateway(tmp: Path, models: list[dict[str, Any]], *extra: str, env: dict[str, str] | None = None) -> LiveServer:
    """This server (keyless for its clients) serving ``models``, started as a subprocess in ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp / "gateway.toml", models)
    return start_server(tmp, "--no-auth", "--config", str(config), *extra, env=env)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def b64_pixels(b64: str) -> np.ndarray:
    return pixels(base64.b64decode(b64))
