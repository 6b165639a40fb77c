"""Keys, per-key limits and the usage ledger (SPEC §11), in a SQL database through SQLAlchemy.

This module owns:

* **the schema** -- tables ``api_keys``, ``usage`` and ``schema_version`` -- and its migrations: an
  ordered list of steps (:data:`MIGRATIONS`), applied at start in one transaction (under an advisory
  lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and recorded in ``schema_version``. A database
  newer than the program is refused rather than guessed at;
* **API keys** -- ``sk-`` + ``secrets.token_urlsafe(32)`` (256 random bits), shown once at creation and
  stored only as a SHA-256 hex digest, looked up by digest and compared with ``hmac.compare_digest``.
  A plain digest suffices for keys of this entropy, and unlike an HMAC with the server's file-signing
  secret it lets ``seedream keys create --database-url`` and several server processes share one
  PostgreSQL database without sharing ``DATA_DIR/secret.key``;
* **the images-per-minute limit** (:class:`IpmLimiter`) -- a sliding 60-second window per key, in
  process memory: a request reserves its planned image count atomically before generating and settles
  to the images it delivered, so concurrent requests never over-grant;
* **the usage ledger** -- one row per generation request, written in batches off the event loop by
  :class:`Accounts`, and the per key and model summary behind ``seedream usage``.

The database is the SQLite file ``DATA_DIR/seedream.db`` unless a URL names another (PostgreSQL through
psycopg). :class:`AccountStore` is synchronous with short transactions; async code goes through
:class:`Accounts`, which runs the store in worker threads. Times are stored as naive UTC.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Select

from .errors import AuthenticationError, IpmRateLimitExceeded

log = logging.getLogger("seedream_server.accounts")

T = TypeVar("T")

DEFAULT_IPM = 500
"""Images per minute a key may generate unless created with another limit (Ark's default)."""

KEY_PREFIX = "sk-"
PREFIX_CHARS = 8  # the leading characters of a key kept in clear, to tell keys apart in listings
WINDOW_S = 60.0
NO_KEY = "-"  # the ledger's key name when authentication is off
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_MAX_TOKEN_CHARS = 256
_PG_LOCK_ID = 0x5EED_2EA4  # advisory lock serialising migrations between processes

# --------------------------------------------------------------------------------------------------
# schema and migrations


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
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
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


METADATA = MetaData()
API_KEYS, USAGE = _define_v1(METADATA)  # the current schema (= version 1)
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


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


MIGRATIONS: tuple[Migration, ...] = (Migration(1, "api_keys and usage tables", _step_1),)
"""Ordered schema steps. Add new ones at the end (version + 1); never change an applied one."""

SCHEMA_LATEST = MIGRATIONS[-1].version


# --------------------------------------------------------------------------------------------------
# plain data


class AccountError(ValueError):
    """A key operation that cannot be done (duplicate name, unknown key, bad limit)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: int
    name: str
    prefix: str
    ipm: int
    models: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class UsageRecord:
    """One ledger row: a generation request as it ended."""

    key_name: str
    model: str
    images: int
    tokens: int
    status: str  # "ok", an error code, or "cancelled"
    duration_ms: int
    request_id: str
    ts: datetime | None = None  # default: when written


@dataclass(frozen=True)
class UsageSummary:
    """Requests of one key on one model, summed."""

    key_name: str
    model: str
    requests: int
    images: int
    tokens: int
    errors: int
    cancelled: int


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _aware(value: datetime | None) -> datetime | None:
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


def _key_from_row(row: Row[Any]) -> ApiKey:
    created = _aware(row.created_at)
    assert created is not None
    return ApiKey(
        id=int(row.id),
        name=str(row.name),
        prefix=str(row.prefix),
        ipm=int(row.ipm),
        models=tuple(json.loads(row.models or "[]")),
        created_at=created,
        revoked_at=_aware(row.revoked_at),
    )


# --------------------------------------------------------------------------------------------------
# the store (synchronous)


def _usage_filter(query: Select[Any], since: datetime | None, key_name: str | None) -> Select[Any]:
    """Restrict a usage query to rows since a time and/or of one key."""
    if since is not None:
        query = query.where(USAGE.c.ts >= _naive_utc(since))
    if key_name is not None:
        query = query.where(USAGE.c.key_name == key_name)
    return query


class AccountStore:
    """Keys and the usage ledger in one database. Every method is one short transaction."""

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

    @classmethod
    def open(cls, data_dir: str | Path, database_url: str = "") -> AccountStore:
        """The store for these settings, migrated to the latest schema."""
        store = cls(resolve_database_url(data_dir, database_url))
        store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(seedream_write=True)
            with conn.begin():
                yield conn

    # schema

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, SCHEMA_VERSION.name):
                return 0
            return int(conn.execute(select(func.max(SCHEMA_VERSION.c.version))).scalar() or 0)

    def migrate(self) -> int:
        """Apply the migration steps this database lacks; returns the schema version."""
        with self._write() as conn:
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
                            version=step.version, description=step.description, applied_at=_utcnow()
                        )
                    )
                    log.info(
                        "database %s: applied schema step %d (%s)", redact_url(self.url), step.version, step.description
                    )
        return SCHEMA_LATEST

    # keys

    def create_key(self, name: str, *, ipm: int = DEFAULT_IPM, models: Sequence[str] = ()) -> tuple[ApiKey, str]:
        """Create a key; returns it and its secret, which is not stored and cannot be shown again."""
        if not NAME_PATTERN.match(name):
            raise AccountError(
                f"invalid key name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-', "
                "starting with a letter or digit"
            )
        if ipm < 1:
            raise AccountError(f"invalid images-per-minute limit {ipm}: must be at least 1")
        listed = tuple(dict.fromkeys(m.strip() for m in models if m.strip()))
        secret = generate_key()
        values = {
            "name": name,
            "key_hash": hash_key(secret),
            "prefix": secret[:PREFIX_CHARS],
            "ipm": ipm,
            "models": json.dumps(list(listed)),
            "created_at": _utcnow(),
        }
        try:
            with self._write() as conn:
                key_id = conn.execute(insert(API_KEYS).values(**values).returning(API_KEYS.c.id)).scalar_one()
        except IntegrityError as exc:
            raise AccountError(f"a key named {name!r} already exists (names stay taken after revocation)") from exc
        created = _aware(values["created_at"])  # type: ignore[arg-type]
        assert created is not None
        return ApiKey(int(key_id), name, secret[:PREFIX_CHARS], ipm, listed, created), secret

    def list_keys(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            return [_key_from_row(row) for row in conn.execute(select(API_KEYS).order_by(API_KEYS.c.id))]

    def is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return not conn.execute(select(func.count()).select_from(API_KEYS)).scalar()

    def revoke_key(self, name: str) -> ApiKey:
        """Revoke a key by name; its requests get 401 from then on."""
        with self._write() as conn:
            row = conn.execute(select(API_KEYS).where(API_KEYS.c.name == name)).first()
            if row is None:
                raise AccountError(f"no key named {name!r}")
            if row.revoked_at is not None:
                raise AccountError(f"key {name!r} is already revoked")
            now = _utcnow()
            conn.execute(update(API_KEYS).where(API_KEYS.c.id == row.id).values(revoked_at=now))
        return replace(_key_from_row(row), revoked_at=_aware(now))

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None (unknown or revoked)."""
        digest = hash_key(secret)
        with self.engine.connect() as conn:
            row = conn.execute(select(API_KEYS).where(API_KEYS.c.key_hash == digest)).first()
        if row is None or not hmac.compare_digest(str(row.key_hash), digest) or row.revoked_at is not None:
            return None
        return _key_from_row(row)

    # usage ledger

    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        now = _utcnow()
        rows = [
            {
                "ts": _naive_utc(r.ts) if r.ts is not None else now,
                "key_name": r.key_name[:64],
                "model": r.model[:200],
                "images": r.images,
                "tokens": r.tokens,
                "status": r.status[:64],
                "duration_ms": r.duration_ms,
                "request_id": r.request_id[:64],
            }
            for r in records
        ]
        with self._write() as conn:
            conn.execute(insert(USAGE), rows)

    def usage_records(self, since: datetime | None = None, key_name: str | None = None) -> list[UsageRecord]:
        query = select(USAGE).order_by(USAGE.c.id)
        query = _usage_filter(query, since, key_name)
        with self.engine.connect() as conn:
            return [
                UsageRecord(
                    key_name=row.key_name,
                    model=row.model,
                    images=int(row.images),
                    tokens=int(row.tokens),
                    status=row.status,
                    duration_ms=int(row.duration_ms),
                    request_id=row.request_id,
                    ts=_aware(row.ts),
                )
                for row in conn.execute(query)
            ]

    def usage_summary(self, since: datetime | None = None, key_name: str | None = None) -> list[UsageSummary]:
        """Requests, images, tokens, errors and cancellations per key and model."""
        failed = USAGE.c.status.notin_(["ok", "cancelled"])
        query = (
            select(
                USAGE.c.key_name,
                USAGE.c.model,
                func.count().label("requests"),
                func.coalesce(func.sum(USAGE.c.images), 0).label("images"),
                func.coalesce(func.sum(USAGE.c.tokens), 0).label("tokens"),
                func.coalesce(func.sum(case((failed, 1), else_=0)), 0).label("errors"),
                func.coalesce(func.sum(case((USAGE.c.status == "cancelled", 1), else_=0)), 0).label("cancelled"),
            )
            .group_by(USAGE.c.key_name, USAGE.c.model)
            .order_by(USAGE.c.key_name, USAGE.c.model)
        )
        query = _usage_filter(query, since, key_name)
        with self.engine.connect() as conn:
            return [
                UsageSummary(
                    key_name=row.key_name,
                    model=row.model,
                    requests=int(row.requests),
                    images=int(row.images),
                    tokens=int(row.tokens),
                    errors=int(row.errors),
                    cancelled=int(row.cancelled),
                )
                for row in conn.execute(query)
            ]


# --------------------------------------------------------------------------------------------------
# images per minute


class Reservation:
    """Images reserved against a key's window; :meth:`settle` gives back what was not delivered."""

    __slots__ = ("_entry", "_limiter", "images", "key_name")

    def __init__(self, limiter: IpmLimiter, key_name: str, entry: list[float], images: int) -> None:
        self._limiter = limiter
        self._entry = entry
        self.key_name = key_name
        self.images = images

    def settle(self, used: int) -> None:
        """Keep ``used`` images of the reservation in the window (never more than reserved)."""
        with self._limiter.lock:
            self._entry[1] = min(self._entry[1], max(0, used))


class IpmLimiter:
    """Sliding-window images-per-minute limits per key, correct under concurrency in one process.

    Reservations are checked and recorded under one lock, so two requests can never both take the
    last images of a window. ``clock`` is monotonic seconds (a parameter for tests of the window).
    """

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.lock = threading.Lock()
        self._windows: dict[str, deque[list[float]]] = {}

    def used(self, key_name: str) -> int:
        with self.lock:
            return int(sum(entry[1] for entry in self._current(key_name, self.clock())))

    def _current(self, key_name: str, now: float) -> deque[list[float]]:
        window = self._windows.setdefault(key_name, deque())
        cutoff = now - self.window_s
        while window and window[0][0] <= cutoff:
            window.popleft()
        return window

    def reserve(self, key_name: str, images: int, limit: int) -> Reservation:
        """Reserve ``images`` for ``key_name`` or raise 429 with the seconds until they fit."""
        with self.lock:
            now = self.clock()
            window = self._current(key_name, now)
            if images > limit:
                raise IpmRateLimitExceeded(
                    f"This request would generate {images} images, more than the API key's limit of {limit} "
                    "images per minute; ask for fewer images.",
                    retry_after=math.ceil(self.window_s),
                )
            used = sum(entry[1] for entry in window)
            if used + images > limit:
                wait, freed = self.window_s, 0.0
                for started, count in window:
                    freed += count
                    if used - freed + images <= limit:
                        wait = started + self.window_s - now
                        break
                retry = max(1, math.ceil(wait))
                raise IpmRateLimitExceeded(
                    f"The API key's limit of {limit} images per minute is reached ({int(used)} used in the last "
                    f"{self.window_s:.0f} s, this request needs {images}); retry after {retry} s.",
                    retry_after=retry,
                )
            entry = [now, float(images)]
            window.append(entry)
            return Reservation(self, key_name, entry, images)


# --------------------------------------------------------------------------------------------------
# the async facade the app and the service use


def parse_bearer(authorization: str | None) -> str:
    """The key in an ``Authorization: Bearer <key>`` header, or 401."""
    if authorization is None or not authorization.strip():
        raise AuthenticationError("The request has no API key: send it in the header `Authorization: Bearer <key>`.")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token) or len(token) > _MAX_TOKEN_CHARS:
        raise AuthenticationError("The Authorization header is malformed: expected `Bearer <key>`.")
    return token


class Accounts:
    """Keys, limits and the ledger for one app: the store run in worker threads, and the limiter.

    Database calls run on a small pool of their own, so key lookups never queue behind image work in
    the default executor. Ledger rows are buffered and written in batches by one background task, so
    recording never waits on the database (and works from cancelled requests); :meth:`drain` waits for
    the buffer to empty.
    """

    MAX_BUFFERED = 10_000

    def __init__(self, store: AccountStore, limiter: IpmLimiter | None = None) -> None:
        self.store = store
        self.limiter = limiter or IpmLimiter()
        self._buffer: list[UsageRecord] = []
        self._writer: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="seedream-accounts")

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    async def start(self) -> None:
        """Open the store, migrating its schema."""
        version = await self._call(self.store.migrate)
        log.info("key store and usage ledger: %s (schema version %d)", redact_url(self.store.url), version)

    async def authenticate(self, authorization: str | None) -> ApiKey:
        token = parse_bearer(authorization)
        key = await self._call(self.store.authenticate, token)
        if key is None:
            raise AuthenticationError("The API key in the request is invalid or has been revoked.")
        return key

    def reserve(self, key: ApiKey, images: int) -> Reservation:
        return self.limiter.reserve(key.name, images, key.ipm)

    def record(self, record: UsageRecord) -> None:
        """Queue one ledger row (timestamped now); a background task writes it."""
        if record.ts is None:
            record = replace(record, ts=_utcnow())
        if len(self._buffer) >= self.MAX_BUFFERED:
            log.error("usage ledger: buffer full (database too slow or down); dropping the oldest row")
            del self._buffer[0]
        self._buffer.append(record)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_buffer())

    async def _write_buffer(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer, []
            try:
                await self._call(self.store.record_usage, batch)
            except Exception:
                log.exception("usage ledger: %d rows could not be written", len(batch))

    async def drain(self) -> None:
        """Wait until every queued ledger row is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def aclose(self) -> None:
        await self.drain()
        await self._call(self.store.close)
        self._pool.shutdown(wait=False)
