"""The deployment files (docs/deploy.md, Dockerfile, compose.yaml, deploy/) name only settings that exist:
every ``SEEDREAM_*`` variable is a row of the settings table, and so is every flag given to ``seedream serve``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from seedream_server.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    ROOT / "docs" / "deploy.md",
    ROOT / "Dockerfile",
    ROOT / "compose.yaml",
    *sorted((ROOT / "deploy").iterdir()),
]
#: variables that configure the server but are not settings
NOT_SETTINGS = {"SEEDREAM_TEST_DATABASE_URL"}
SERVE_ONLY_FLAGS = {"--config", "--help"}


def flags() -> set[str]:
    names = set(SERVE_ONLY_FLAGS)
    for row in SETTINGS:
        for part in (row.flag or f"--{row.name.replace('_', '-')}").split("/"):
            names.add(part)
    return names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_setting_named_exists(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    settings = {f"SEEDREAM_{row.name.upper()}" for row in SETTINGS}
    for variable in set(re.findall(r"SEEDREAM_[A-Z0-9_]+", text)) - NOT_SETTINGS:
        assert variable in settings, f"{path.name}: {variable} is not a setting"
    known = flags()
    for command in re.findall(r"seedream serve([^\n\"`]*)", text):
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command):
            assert flag in known, f"{path.name}: seedream serve {flag} is not a setting"
    for flag in re.findall(r"`(--[a-z][a-z0-9-]*)", text):  # flags named in prose
        assert flag in known, f"{path.name}: {flag} is not a setting"


@pytest.mark.parametrize("path", [ROOT / "compose.yaml", ROOT / "deploy" / "rayservice.yaml"], ids=str)
def test_yaml_files_parse(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    assert documents and all(isinstance(doc, dict) for doc in documents)


def test_the_model_files_load(tmp_path: Path) -> None:
    from seedream_server.config import load_settings
    from seedream_server.engines.ray import split_placement

    settings = load_settings(ROOT / "deploy" / "models.toml", environ={})
    placement, _ = split_placement(settings.models[0])
    assert placement is not None and placement.replicas == 2
    service = list(yaml.safe_load_all((ROOT / "deploy" / "rayservice.yaml").read_text(encoding="utf-8")))
    toml_text = service[1]["data"]["models.toml"]
    (tmp_path / "models.toml").write_text(toml_text, encoding="utf-8")
    model = load_settings(tmp_path / "models.toml", environ={}).models[0]
    apps = yaml.safe_load(service[0]["spec"]["serveConfigV2"])["applications"]
    assert [app["name"] for app in apps] == [model.name]  # the API finds the application by the model's name
