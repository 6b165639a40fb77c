"""The accounts database: its tables, its migrations, and the connection rules every store part shares.

Tables ``api_keys`` (keys), ``usage`` (the ledger), ``ipm_reservations`` (images-per-minute windows) and
``schema_version``. Migrations are an ordered list of steps (:data:`MIGRATIONS`), applied at start in one
transaction (under an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and recorded in
``schema_version``. A database newer than the program is refused rather than guessed at.

:class:`Database` opens the engine (SQLite file or PostgreSQL through psycopg), hands out write
transactions that take the write lock up front on SQLite (:meth:`Database.writing`), and migrates. The key
store, the ledger and the limiter are built on it. Times in ``DateTime`` columns are naive UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.schema import CreateColumn

log = logging.getLogger("seedream_server.accounts")

_PG_LOCK_ID = 0x5EED_2EA4  # advisory lock serialising migrations between processes


def _id_column() -> Column[int]:
    return Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)


def _define_v1(metadata: MetaData) -> tuple[Table, Table]:
    """The tables as migration step 1 creates them. Later steps alter them; never edit this one."""
    api_keys = Table(
        "api_keys",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(64), nullable=False, unique=True),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("ipm", Integer, nullable=False),
        Column("models", Text, nullable=False),  # JSON list of model names or aliases; [] = every model
        Column("created_at", DateTime, nullable=False),
        Column("revoked_at", DateTime, nullable=True),
    )
    usage = Table(
        "usage",
        metadata,
        _id_column(),
        Column("ts", DateTime, nullable=False),
        Column("key_name", String(64), nullable=False),
        Column("model", String(200), nullable=False),
        Column("images", Integer, nullable=False),
        Column("tokens", BigInteger, nullable=False),
        Column("status", String(64), nullable=False),
        Column("duration_ms", Integer, nullable=False),
        Column("request_id", String(64), nullable=False),
        Index("ix_usage_ts", "ts"),
        Index("ix_usage_key_name_ts", "key_name", "ts"),
    )
    return api_keys, usage


def _usage_v2_columns() -> tuple[Column[Any], ...]:
    """Step 2's ledger columns: the process that owns a row (for crash recovery). Never edit."""
    return (
        Column("host", String(255), nullable=True),
        Column("pid", Integer, nullable=True),
        Column("instance", String(32), nullable=True),
    )


def _usage_v2_index(usage: Table) -> Index:
    """Step 2: at most one ``running`` row per request id. Never edit."""
    running = usage.c.status == "running"
    return Index(
        "ux_usage_running_request_id",
        usage.c.request_id,
        unique=True,
        sqlite_where=running,
        postgresql_where=running,
    )


def _usage_v3_columns() -> tuple[Column[Any], ...]:
    """Step 3's ledger column: the request id an upstream engine (ark, openai) gave. Never edit."""
    return (Column("upstream_request_id", String(128), nullable=True),)


def _reservations_v3_columns() -> tuple[Column[Any], ...]:
    """Step 3: the request a reservation is for, so crash recovery can settle it. Never edit."""
    return (Column("request_id", String(64), nullable=True),)


def _define_reservations_v2(metadata: MetaData) -> Table:
    """Step 2's images-per-minute reservations: images taken by a key at a wall-clock time. Never edit."""
    return Table(
        "ipm_reservations",
        metadata,
        _id_column(),
        Column("key_name", String(64), nullable=False),
        Column("ts", Float, nullable=False),  # epoch seconds
        Column("images", Integer, nullable=False),
        Index("ix_ipm_reservations_key_name_ts", "key_name", "ts"),
    )


METADATA = MetaData()
"""The current schema (version :data:`SCHEMA_LATEST`), built from the steps' definitions."""
API_KEYS, USAGE = _define_v1(METADATA)
for _column in (*_usage_v2_columns(), *_usage_v3_columns()):
    USAGE.append_column(_column)
_usage_v2_index(USAGE)
IPM_RESERVATIONS = _define_reservations_v2(METADATA)
for _column in _reservations_v3_columns():
    IPM_RESERVATIONS.append_column(_column)
SCHEMA_VERSION = Table(
    "schema_version",
    METADATA,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", DateTime, nullable=False),
)


def _step_1(conn: Connection) -> None:
    metadata = MetaData()
    _define_v1(metadata)
    metadata.create_all(conn)


def _step_2(conn: Connection) -> None:
    metadata = MetaData()
    _, usage = _define_v1(metadata)
    _add_columns(conn, usage, _usage_v2_columns())
    _usage_v2_index(usage).create(conn)
    _define_reservations_v2(metadata).create(conn)


def _add_columns(conn: Connection, table: Table, columns: tuple[Column[Any], ...]) -> None:
    name = conn.dialect.identifier_preparer.format_table(table)
    for column in columns:
        table.append_column(column)
        conn.execute(text(f"ALTER TABLE {name} ADD COLUMN {CreateColumn(column).compile(dialect=conn.dialect)}"))


def _step_3(conn: Connection) -> None:
    metadata = MetaData()
    _, usage = _define_v1(metadata)
    _add_columns(conn, usage, _usage_v3_columns())
    _add_columns(conn, _define_reservations_v2(metadata), _reservations_v3_columns())


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "api_keys and usage tables", _step_1),
    Migration(2, "ipm_reservations table; usage rows owned by a process, one running row per request", _step_2),
    Migration(3, "usage.upstream_request_id; ipm_reservations.request_id (crash recovery settles them)", _step_3),
)
"""Ordered schema steps. Add new ones at the end (version + 1); never change an applied one."""

SCHEMA_LATEST = MIGRATIONS[-1].version


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def resolve_database_url(data_dir: str | Path, database_url: str = "") -> str:
    """The SQLAlchemy URL to use: ``database_url``, else the SQLite file ``DATA_DIR/seedream.db``.

    A bare ``postgresql://`` (or ``postgres://``) URL gets the psycopg driver, the one this package ships.
    """
    if not database_url:
        return f"sqlite:///{Path(data_dir).resolve() / 'seedream.db'}"
    url = make_url(database_url)
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's begin event emit BEGIN itself (pysqlite's own handling skips DDL), so that
    # migrations are transactional and writers can take the lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("seedream_write") else "BEGIN")


class Database:
    """One accounts database: the engine, write transactions and migrations. Synchronous."""

    def __init__(self, url: str) -> None:
        self.url = url
        sa_url = make_url(url)
        self.dialect = sa_url.get_backend_name()
        if self.dialect == "sqlite":
            if sa_url.database and sa_url.database != ":memory:":
                Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(sa_url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            try:
                self.engine = create_engine(sa_url, pool_pre_ping=True)
            except ModuleNotFoundError as exc:
                extra = " (pip install 'seedream-server[postgres]')" if self.dialect == "postgresql" else ""
                raise RuntimeError(f"the database driver for {sa_url.drivername} is not installed{extra}") from exc

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the database's write lock from its start (``BEGIN IMMEDIATE``)."""
        with self.engine.connect() as conn:
            conn.execution_options(seedream_write=True)
            with conn.begin():
                yield conn

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, SCHEMA_VERSION.name):
                return 0
            return int(conn.execute(select(func.max(SCHEMA_VERSION.c.version))).scalar() or 0)

    def migrate(self) -> int:
        """Apply the migration steps this database lacks; returns the schema version."""
        with self.writing() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
            SCHEMA_VERSION.create(conn, checkfirst=True)
            current = int(conn.execute(select(func.max(SCHEMA_VERSION.c.version))).scalar() or 0)
            if current > SCHEMA_LATEST:
                raise RuntimeError(
                    f"database schema version {current} is newer than this program's ({SCHEMA_LATEST}); "
                    "upgrade seedream-server"
                )
            for step in MIGRATIONS:
                if step.version > current:
                    step.apply(conn)
                    conn.execute(
                        insert(SCHEMA_VERSION).values(
                            version=step.version, description=step.description, applied_at=utcnow()
                        )
                    )
                    log.info(
                        "database %s: applied schema step %d (%s)", redact_url(self.url), step.version, step.description
                    )
        return SCHEMA_LATEST
