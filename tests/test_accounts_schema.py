"""The accounts database: where it lives, and its migrations (``accounts/schema.py``).

Against a real SQLite file in a temp dir, and against PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select

import accounts_support
from seedream_server.accounts import (
    METADATA,
    MIGRATIONS,
    SCHEMA_LATEST,
    SCHEMA_VERSION,
    USAGE,
    AccountStore,
    resolve_database_url,
)

database_url = accounts_support.database_url
store = accounts_support.store


def test_sqlite_file_in_data_dir_by_default(tmp_path: Path) -> None:
    url = resolve_database_url(tmp_path / "data")
    assert url == f"sqlite:///{(tmp_path / 'data' / 'seedream.db').resolve()}"
    assert resolve_database_url("x", "postgresql://u:p@db.example/keys") == "postgresql+psycopg://u:p@db.example/keys"
    AccountStore.open(tmp_path / "data").close()
    assert (tmp_path / "data" / "seedream.db").is_file()


def test_migrations_create_the_schema_once(tmp_path: Path, database_url: str) -> None:
    fresh = AccountStore(resolve_database_url(tmp_path / "data", database_url))
    assert fresh.schema_version() == 0
    assert fresh.migrate() == SCHEMA_LATEST
    assert fresh.migrate() == SCHEMA_LATEST  # idempotent
    assert fresh.schema_version() == SCHEMA_LATEST
    with fresh.engine.connect() as conn:
        versions = conn.execute(select(SCHEMA_VERSION.c.version)).scalars().all()
    assert versions == list(range(1, SCHEMA_LATEST + 1))
    fresh.close()


def test_the_migrated_database_has_the_current_schema(store: AccountStore) -> None:
    inspector = inspect(store.engine)
    for table in METADATA.sorted_tables:
        assert {c["name"] for c in inspector.get_columns(table.name)} == set(table.columns.keys()), table.name
        assert {i["name"] for i in inspector.get_indexes(table.name)} >= {i.name for i in table.indexes}, table.name


def test_step_2_keeps_the_rows_of_a_version_1_database(tmp_path: Path, database_url: str) -> None:
    old = AccountStore(resolve_database_url(tmp_path / "data", database_url))
    with old.writing() as conn:
        SCHEMA_VERSION.create(conn)
        MIGRATIONS[0].apply(conn)
        conn.execute(insert(SCHEMA_VERSION).values(version=1, description="v1", applied_at=datetime.now()))
        row = {"ts": datetime.now(), "key_name": "alice", "model": "m", "images": 2, "tokens": 5, "status": "ok"}
        conn.execute(insert(USAGE).values(**row, duration_ms=7, request_id="r1"))  # v1's columns only
    assert old.schema_version() == 1
    assert old.migrate() == SCHEMA_LATEST
    [record] = old.usage_records()
    assert (record.key_name, record.images, record.status, record.request_id) == ("alice", 2, "ok", "r1")
    with old.engine.connect() as conn:
        assert conn.execute(select(USAGE.c.host, USAGE.c.pid)).one() == (None, None)
    old.close()


def test_a_database_newer_than_the_program_is_refused(store: AccountStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(SCHEMA_VERSION).values(version=99, description="future", applied_at=datetime.now()))
    with pytest.raises(RuntimeError, match="newer than this program"):
        store.migrate()
