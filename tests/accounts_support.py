"""Helpers for the key, limit and ledger tests: the ``database_url`` and ``store`` fixtures, a settable clock,
and key-aware app clients.

Importable (not a conftest). A test module takes the fixtures with ``database_url = accounts_support.database_url``
(and ``store = accounts_support.store``).

``database_url`` runs a test once on SQLite (the default: ``""``, meaning the file ``DATA_DIR/seedream.db``)
and once on PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` names a server (``.ci/run`` starts one from
Debian's packages); each PostgreSQL case gets a fresh database, dropped afterwards. Without the variable
the PostgreSQL cases are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from seedream_server.accounts import AccountStore, UsageRecord
from seedream_server.config import DEFAULT_ALIASES, DEFAULT_MODEL, ModelConfig, Settings, load_settings

PG_ENV = "SEEDREAM_TEST_DATABASE_URL"
MODEL = DEFAULT_MODEL
OTHER_MODEL = "preview-b"
TWO_MODELS = (
    ModelConfig(name=MODEL, engine="preview", aliases=DEFAULT_ALIASES),
    ModelConfig(name=OTHER_MODEL, engine="preview", aliases=("b-alias",)),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
        return
    admin_url = os.environ.get(PG_ENV, "")
    if not admin_url:
        pytest.skip(f"PostgreSQL not available (set {PG_ENV})")
    name = f"seedream_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[AccountStore]:
    """The migrated store of ``tmp_path / "data"`` on each database."""
    opened = AccountStore.open(tmp_path / "data", database_url)
    yield opened
    opened.close()


def ledger_rows(data_dir: Path, database_url: str = "") -> list[UsageRecord]:
    """The ledger of a server's data directory (or database), read through a store of its own."""
    store = AccountStore.open(data_dir, database_url)
    try:
        return store.usage_records()
    finally:
        store.close()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped (surely not alive, for crash recovery tests)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


class Clock:
    """A clock the test moves by hand: epoch seconds for the limiter, monotonic ones for the throttle."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_settings(tmp_path: Path, database_url: str = "", **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": str(tmp_path / "data"), "database_url": database_url, "auth": True}
    models = overrides.pop("models", None)
    values.update(overrides)
    settings = load_settings(overrides=values, environ={})
    if models is not None:
        settings = replace(settings, models=tuple(models))
    return settings


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client with the app's lifespan around it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000", timeout=120) as client:
            yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def body(**fields: Any) -> dict[str, Any]:
    base = {"model": MODEL, "prompt": "a lighthouse at dusk", "size": "1280x720", "response_format": "b64_json"}
    return {**base, **fields}
