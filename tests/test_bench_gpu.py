"""bench/bench_gpu.py runs (tiny mode, one family, one option) and its real-size configs are the published ones.

The real-size pipelines are only instantiated on the meta device here (no memory, no weights): their parameter
counts prove the configs are the real architectures (SDXL's UNet 2.6B, FLUX.2 klein 4B's transformer 3.9B,
Qwen-Image's 20B MMDiT).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_run_of_one_family_and_one_option(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    options = ["--options", "cache=first-block", "--options", "cache=taylorseer"]
    sizes = ["--size", "64", "--steps", "4", "--repeat", "1", "--batch-sizes", "2"]
    (rows,) = bench.main(["--tiny", "--family", "flux2-klein", *options, *sizes])
    labels = [row.label for row in rows]
    assert labels == [
        "bare diffusers",
        "server, in a row",
        "server, 4 at once",
        "cache=first-block",
        "cache=taylorseer",
        "bare, batch of 2",
    ]
    by_label = {row.label: row for row in rows}
    assert by_label["server, in a row"].mad == 0.0  # the server draws the exact image of the bare call
    assert by_label["server, 4 at once"].note == "largest batch 4"
    assert by_label["cache=first-block"].seconds is None and "refused: " in by_label["cache=first-block"].note
    assert by_label["cache=taylorseer"].seconds is not None and by_label["cache=taylorseer"].mad is not None
    out = capsys.readouterr().out
    assert "| bare diffusers |" in out and "### flux2-klein at 64x64, 4 steps" in out


@pytest.mark.parametrize(
    ("family", "part", "low", "high"),
    [
        ("sdxl", "unet", 2.5e9, 2.7e9),
        ("flux2-klein", "transformer", 3.7e9, 4.1e9),
        ("qwen-image-edit-plus", "transformer", 20.0e9, 20.8e9),
    ],
)
def test_real_configs_are_the_published_architectures(
    bench: ModuleType, family: str, part: str, low: float, high: float
) -> None:
    with torch.device("meta"):
        components = bench.REAL[family]()
    count = sum(p.numel() for p in components[part].parameters())
    assert low <= count <= high, f"{family} {part}: {count / 1e9:.2f}B parameters"
