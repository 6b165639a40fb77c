"""``seedream generate``: streams and saves images, in-process or against a real server."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from PIL import Image

from conftest import LiveServer
from support import SEED_PROMPT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seedream_server.cli", "generate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generate_in_process_saves_a_group(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run(SEED_PROMPT, "--size", "1K", "--seed", "3", "-o", str(out))
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["0.jpeg", "1.jpeg", "2.jpeg"]
    assert all(Image.open(out / f).size == (1024, 1024) for f in files)
    assert "3 of 3 images saved" in result.stdout


def test_generate_against_a_server_with_a_reference_file(live_server: LiveServer, tmp_path: Path) -> None:
    ref = tmp_path / "ref.png"
    Image.new("RGB", (160, 90), (40, 90, 200)).save(ref)
    out = tmp_path / "out"
    result = run(
        "a poster",
        "-i",
        str(ref),
        "--size",
        "1K",
        "--max-images",
        "1",
        "--server",
        live_server.url,
        "-o",
        str(out),
        "--no-watermark",
    )
    assert result.returncode == 0, result.stderr
    image = Image.open(io.BytesIO((out / "0.jpeg").read_bytes()))
    assert image.size == (1312, 736)  # 16:9 from the reference


def test_generate_reports_errors(live_server: LiveServer, tmp_path: Path) -> None:
    result = run("x", "--size", "9x9", "--server", live_server.url, "-o", str(tmp_path))
    assert result.returncode != 0
    assert "InvalidParameter" in result.stderr and "size" in result.stderr
