"""Configuring the upstream engines: the options (defaults, one-line errors at start-up, documented in
docs/engines.md), the registry, and readiness of an upstream that cannot be reached (start-up does not
wait for it; /readyz says so)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from conftest import free_port
from seedream_server.config import ModelConfig, load_settings
from seedream_server.engines.registry import build_engine
from seedream_server.engines.upstream import ArkEngine, OpenAIEngine, UpstreamOptions, UpstreamSetupError
from seedream_server.engines.upstream.options import ARK_BASE_URL, option_rows
from seedream_server.http import create_app
from support import running

DOC = Path(__file__).resolve().parent.parent / "docs" / "engines.md"


def render(engine: str) -> str:
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {kind} | {default} | {text} |" for name, kind, default, text in option_rows(engine)]
    return "\n".join(rows)


@pytest.mark.parametrize("engine", ["ark", "openai"])
def test_every_option_is_documented(engine: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    start = doc.index(f"<!-- {engine}-options:start")
    start = doc.index("\n", start) + 1
    end = doc.index(f"<!-- {engine}-options:end -->")
    assert doc[start:end].strip() == render(engine)


def test_ark_defaults() -> None:
    options = UpstreamOptions.parse("ark", "doubao-seedream-4-0-250828", {})
    assert options.base_url == ARK_BASE_URL
    assert options.upstream_model == "doubao-seedream-4-0-250828"  # default: the served name
    assert (options.rehost, options.timeout_s, options.max_retries, options.keys) == (True, 120.0, 3, ())


def test_the_issues_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "k1, k2")
    options = UpstreamOptions.parse(
        "openai",
        "flux2-klein",
        {
            "base_urls": ["http://gpu-a:8091/v1/", "http://gpu-b:8091/v1"],
            "api_keys_env": "UPSTREAM_KEY",
            "api_keys": ["k3"],
            "upstream_model": "black-forest-labs/FLUX.2-klein-4B",
            "max_references": 10,
            "timeout_s": 30,
        },
    )
    assert options.base_urls == ("http://gpu-a:8091/v1", "http://gpu-b:8091/v1")
    assert options.keys == ("k1", "k2", "k3") and options.timeout_s == 30.0 and options.max_references == 10
    assert "k3" not in repr(options)  # keys are not shown


@pytest.mark.parametrize(
    ("engine", "options", "message"),
    [
        ("ark", {"base_urls": ["http://a/v1"]}, r"unknown option\(s\) base_urls; known: api_keys, "),
        ("openai", {}, r"option 'base_urls' \(a list of replica URLs\) is required"),
        ("openai", {"base_urls": []}, r"option 'base_urls' must be a non-empty list of http\(s\) URLs"),
        ("ark", {"base_url": "ftp://x"}, r"option 'base_url' must be an http\(s\) URL, got 'ftp://x'"),
        ("ark", {"timeout_s": "120"}, r"option 'timeout_s' must be a number of seconds in \(0, 3600\]"),
        ("ark", {"max_retries": True}, r"option 'max_retries' must be an integer in 0..10"),
        ("openai", {"base_urls": ["http://a/v1"], "max_references": 15}, r"'max_references' must be an integer"),
        ("ark", {"api_keys_env": "SEEDREAM_TEST_UNSET_KEYS"}, r"names 'SEEDREAM_TEST_UNSET_KEYS', which is not set"),
    ],
)
def test_bad_options_are_one_line_errors(engine: str, options: dict[str, object], message: str) -> None:
    with pytest.raises(UpstreamSetupError, match=message) as caught:
        UpstreamOptions.parse(engine, "m", options)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"model 'm' (engine {engine}): ")


def test_a_bad_key_list_does_not_show_the_keys() -> None:
    with pytest.raises(UpstreamSetupError) as caught:
        UpstreamOptions.parse("ark", "m", {"api_keys": ["sk-secret-one", ""]})
    assert "sk-secret-one" not in str(caught.value)


def test_the_registry_builds_both_kinds() -> None:
    ark = build_engine(ModelConfig("a", "ark", options={"upstream_model": "x"}))
    oai = build_engine(ModelConfig("o", "openai", options={"base_urls": ["http://127.0.0.1:9/v1"]}))
    assert isinstance(ark, ArkEngine) and ark.kind == "ark" and ark.capabilities.plans_groups
    assert isinstance(oai, OpenAIEngine) and oai.kind == "openai" and not oai.capabilities.plans_groups
    with pytest.raises(ValueError, match="available: ark, diffusers, openai, preview"):
        build_engine(ModelConfig("z", "nope"))


async def test_an_unreachable_upstream_is_unready_without_blocking_start(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    models = (
        ModelConfig("relay", "ark", options={"base_url": f"{dead}/api/v3"}),
        ModelConfig("pool", "openai", options={"base_urls": [f"{dead}/v1"]}),
    )
    settings = load_settings(overrides={"data_dir": str(tmp_path / "data"), "auth": False}, environ={})
    app = create_app(replace(settings, models=models))
    async with running(app) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["unready"] == ["pool", "relay"]
        listed = (await client.get("/v1/models")).json()["data"]
        assert {m["id"]: m["engine"] for m in listed} == {"relay": "ark", "pool": "openai"}
        body = {"model": "relay", "prompt": "a fox", "size": "1K"}
        refused = await client.post("/api/v3/images/generations", json=body)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "UpstreamUnavailable"
        assert dead not in refused.text
