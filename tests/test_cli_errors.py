"""Expected failures of the ``seedream`` command are one line ``Error: ...`` with a non-zero exit code (tracebacks
only with ``--debug``); ``keys`` and ``usage`` name the database they open, never create one to list, revoke or
summarise, and read the settings ``serve`` reads; ``generate -o`` never overwrites or mixes with an earlier run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import LiveServer, free_port
from seedream_server.cli import main

NO_SETTINGS: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SEEDREAM_")} | {
    "SEEDREAM_DATA_DIR": None
}


def seedream(*args: str, env: dict[str, str] | None = None, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """A real ``seedream`` process (``prelude`` runs first, e.g. to hide a module)."""
    code = f"{prelude}\nfrom seedream_server.cli import main\nmain(prog_name='seedream')"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SEEDREAM_")}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


# --- generate -----------------------------------------------------------------------------------


def test_generate_with_the_server_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = seedream("generate", "a fox", "--server", url, "-o", str(tmp_path / "out"))
    assert_one_line_error(result, f"cannot reach the server at {url}")
    assert result.stderr.count("\n") == 1  # nothing else at all
    debug = seedream("--debug", "generate", "a fox", "--server", url, "-o", str(tmp_path / "out"))
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConnectError" in debug.stderr


def test_generate_with_a_missing_reference_file(tmp_path: Path) -> None:
    result = seedream("generate", "a fox", "-i", str(tmp_path / "nope.png"), "-o", str(tmp_path / "out"))
    assert_one_line_error(result, "cannot read the reference image", "nope.png")


def test_generate_never_mixes_runs(live_server: LiveServer, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = seedream("generate", "a set of 3 stickers", "--size", "1K", "--server", live_server.url, "-o", str(out))
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["0.jpeg", "1.jpeg", "2.jpeg"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    single = ["--max-images", "1", "--size", "1K", "--seed", "5", "--server", live_server.url, "-o", str(out)]
    again = seedream("generate", "one fox", *single)
    assert_one_line_error(again, "already holds images of an earlier run", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    replaced = seedream("generate", "one fox", *single, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert [p.name for p in out.iterdir()] == ["0.jpeg"]  # the earlier run's 1 and 2 are gone, not mixed in
    assert (out / "0.jpeg").read_bytes() != before["0.jpeg"]
    assert "1 of 1 image saved" in replaced.stdout


# --- serve: models that cannot start --------------------------------------------------------------


def test_serve_with_a_missing_model_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    result = seedream("serve", "--data-dir", str(tmp_path / "data"), "--port", "1", "--model-source", str(missing))
    assert_one_line_error(result, "cannot start the server", "no-such-model", "does not exist")


def test_serve_without_the_diffusers_extra(tmp_path: Path) -> None:
    hide = "import sys\nfor name in ('torch', 'diffusers', 'transformers'):\n    sys.modules[name] = None"
    args = ("serve", "--data-dir", str(tmp_path / "data"), "--port", "1", "--model-source", str(tmp_path))
    result = seedream(*args, prelude=hide)
    assert_one_line_error(result, "cannot start the server", "pip install 'seedream-server[diffusers]'")


def test_serve_with_an_uncached_hub_id(tmp_path: Path) -> None:
    """The hub id fails when the engine starts (inside uvicorn's lifespan), still as one line."""
    offline = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    args = ("serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--no-auth")
    result = seedream(*args, "--model-source", "example-org/not-cached-model", env=offline)
    assert_one_line_error(result, "cannot start the server", "example-org/not-cached-model", "allow_download")
    debug = seedream("--debug", *args, "--model-source", "example-org/not-cached-model", env=offline)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


# --- keys and usage: the same database as serve, never a new empty one -------------------------------


def test_list_revoke_and_usage_never_create_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default data dir is ./data
    for args in (["keys", "list"], ["keys", "revoke", "alice"], ["usage"]):
        result = CliRunner().invoke(main, args, env=NO_SETTINGS)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"Error: no key store at {tmp_path / 'data' / 'seedream.db'}"), result.stderr
        assert "seedream serve" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_keys_and_usage_read_the_settings_serve_reads(tmp_path: Path) -> None:
    data = tmp_path / "served"
    created = CliRunner().invoke(main, ["keys", "create", "--name", "alice"], env={"SEEDREAM_DATA_DIR": str(data)})
    assert created.exit_code == 0, created.stderr
    assert f"key store: sqlite:///{data / 'seedream.db'}" in created.stderr
    config = tmp_path / "seedream.toml"
    config.write_text(f'[server]\ndata_dir = "{data}"\n')
    listed = CliRunner().invoke(main, ["keys", "list", "--config", str(config)], env=NO_SETTINGS)
    assert listed.exit_code == 0 and "alice" in listed.stdout
    assert f"key store: sqlite:///{data / 'seedream.db'}" in listed.stderr
    usage = CliRunner().invoke(main, ["usage"], env={"SEEDREAM_DATA_DIR": str(data)})
    assert usage.exit_code == 0 and "no requests recorded" in usage.stdout


def test_a_reference_that_is_not_an_image_file_is_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = seedream("generate", "a fox", "-i", str(text), "-o", str(tmp_path / "out"))
    assert_one_line_error(result)
