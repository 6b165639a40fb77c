"""The key store, migrations, the images-per-minute limiter and the ``keys`` / ``usage`` commands (SPEC §11).

Against a real SQLite file in a temp dir, and against PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

import accounts_support
from seedream_server.accounts import (
    API_KEYS,
    DEFAULT_IPM,
    SCHEMA_LATEST,
    SCHEMA_VERSION,
    USAGE,
    AccountError,
    AccountStore,
    IpmLimiter,
    UsageRecord,
    hash_key,
    parse_bearer,
    resolve_database_url,
)
from seedream_server.cli import main, parse_since
from seedream_server.errors import AuthenticationError, IpmRateLimitExceeded

database_url = accounts_support.database_url

KEY_RE = re.compile(r"^sk-[A-Za-z0-9_-]{43}$")


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> AccountStore:
    return AccountStore.open(tmp_path / "data", database_url)


def cli(tmp_path: Path, database_url: str, *args: str) -> tuple[int, str, str]:
    """Run ``seedream ARGS --data-dir D [--database-url U]`` in process; (exit code, stdout, stderr)."""
    extra = ["--data-dir", str(tmp_path / "data")] + (["--database-url", database_url] if database_url else [])
    result = CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# -- schema ----------------------------------------------------------------------------------------


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


def test_a_database_newer_than_the_program_is_refused(store: AccountStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(SCHEMA_VERSION).values(version=99, description="future", applied_at=datetime.now()))
    with pytest.raises(RuntimeError, match="newer than this program"):
        store.migrate()


# -- keys ------------------------------------------------------------------------------------------


def test_create_authenticate_list_revoke(store: AccountStore) -> None:
    key, secret = store.create_key("alice", ipm=20, models=["seedream-4.0", " ", "seedream-4.0", "b"])
    assert KEY_RE.match(secret)
    assert (key.name, key.ipm, key.models, key.prefix) == ("alice", 20, ("seedream-4.0", "b"), secret[:8])
    assert store.authenticate(secret) == key
    assert store.authenticate(secret + "x") is None
    assert store.authenticate("sk-" + "A" * 43) is None
    other, other_secret = store.create_key("bob")
    assert other.ipm == DEFAULT_IPM and other.models == ()
    assert other_secret != secret
    assert [k.name for k in store.list_keys()] == ["alice", "bob"]

    revoked = store.revoke_key("alice")
    assert revoked.revoked and revoked.revoked_at is not None
    assert store.authenticate(secret) is None
    assert store.authenticate(other_secret) == other
    with pytest.raises(AccountError, match="already revoked"):
        store.revoke_key("alice")
    with pytest.raises(AccountError, match="no key named"):
        store.revoke_key("carol")


def test_names_are_unique_and_checked(store: AccountStore) -> None:
    store.create_key("alice")
    with pytest.raises(AccountError, match="already exists"):
        store.create_key("alice")
    for bad in ("", "-x", "has space", "x" * 65, "ünï"):
        with pytest.raises(AccountError, match="invalid key name"):
            store.create_key(bad)
    with pytest.raises(AccountError, match="at least 1"):
        store.create_key("zero", ipm=0)


def test_only_the_hash_is_stored(store: AccountStore) -> None:
    _, secret = store.create_key("alice")
    with store.engine.connect() as conn:
        row = conn.execute(select(API_KEYS)).one()
    stored = [str(value) for value in row]
    assert secret not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    assert not any(secret[8:] in value for value in stored)  # beyond the listed prefix, nothing in clear


def test_sqlite_file_bytes_never_hold_a_key(tmp_path: Path) -> None:
    store = AccountStore.open(tmp_path / "data")
    secrets_ = [store.create_key(f"k{i}")[1] for i in range(5)]
    store.authenticate(secrets_[0])
    store.close()
    files = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("seedream.db")]
    blob = b"".join(p.read_bytes() for p in files)
    assert hash_key(secrets_[0]).encode() in blob
    for secret in secrets_:
        assert secret.encode() not in blob
        assert secret[8:].encode() not in blob


def test_bearer_parsing() -> None:
    assert parse_bearer("Bearer sk-abc") == "sk-abc"
    assert parse_bearer("bearer   sk-abc  ") == "sk-abc"
    for header in (None, "", "  "):
        with pytest.raises(AuthenticationError, match="no API key"):
            parse_bearer(header)
    for header in ("Bearer", "Bearer  ", "Basic x", "sk-abc", "Bearer a b", "Bearer " + "x" * 300):
        with pytest.raises(AuthenticationError, match="malformed"):
            parse_bearer(header)


# -- ledger ----------------------------------------------------------------------------------------


def test_usage_summary_per_key_and_model(store: AccountStore) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=2)
    store.record_usage(
        [
            UsageRecord("alice", "m1", 2, 32768, "ok", 120, "r1", ts=now),
            UsageRecord("alice", "m1", 0, 0, "InvalidParameter", 3, "r2", ts=now),
            UsageRecord("alice", "m2", 1, 16384, "ok", 80, "r3", ts=now),
            UsageRecord("alice", "m1", 1, 0, "cancelled", 50, "r4", ts=now),
            UsageRecord("bob", "m1", 3, 3, "ok", 10, "r5", ts=old),
            UsageRecord("-", "m1", 1, 1, "ok", 10, "r6", ts=now),
        ]
    )
    rows = {(r.key_name, r.model): r for r in store.usage_summary()}
    alice = rows["alice", "m1"]
    assert (alice.requests, alice.images, alice.tokens, alice.errors, alice.cancelled) == (3, 3, 32768, 1, 1)
    assert rows["alice", "m2"].images == 1
    assert rows["bob", "m1"].images == 3
    recent = {(r.key_name, r.model) for r in store.usage_summary(since=now - timedelta(hours=1))}
    assert recent == {("alice", "m1"), ("alice", "m2"), ("-", "m1")}
    assert [(r.key_name, r.model) for r in store.usage_summary(key_name="bob")] == [("bob", "m1")]
    records = store.usage_records(key_name="alice")
    assert [r.request_id for r in records] == ["r1", "r2", "r3", "r4"]
    assert records[0].ts is not None and abs((records[0].ts - now).total_seconds()) < 1
    with store.engine.connect() as conn:
        assert conn.execute(select(USAGE.c.status).where(USAGE.c.request_id == "r2")).scalar() == "InvalidParameter"


# -- images per minute -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_and_retry_after() -> None:
    clock = Clock()
    limiter = IpmLimiter(clock=clock)
    limiter.reserve("k", 3, 5)
    clock.now += 20
    limiter.reserve("k", 2, 5)
    with pytest.raises(IpmRateLimitExceeded) as info:
        limiter.reserve("k", 1, 5)
    assert info.value.retry_after == 40  # the first 3 images leave the window 60 s after they were taken
    assert info.value.code == "ModelAccountIpmRateLimitExceeded" and info.value.status == 429
    with pytest.raises(IpmRateLimitExceeded) as info:
        limiter.reserve("k", 4, 5)
    assert info.value.retry_after == 60  # needs the second reservation gone too
    limiter.reserve("other", 5, 5)  # keys are independent
    clock.now += 40
    limiter.reserve("k", 3, 5)
    assert limiter.used("k") == 5
    clock.now += 0.5
    with pytest.raises(IpmRateLimitExceeded) as info:
        limiter.reserve("k", 1, 5)
    assert info.value.retry_after == 20  # fractional waits round up, and never below 1
    clock.now += 19.4
    with pytest.raises(IpmRateLimitExceeded) as info:
        limiter.reserve("k", 1, 5)
    assert info.value.retry_after == 1


def test_settling_gives_back_undelivered_images() -> None:
    clock = Clock()
    limiter = IpmLimiter(clock=clock)
    reservation = limiter.reserve("k", 4, 5)
    with pytest.raises(IpmRateLimitExceeded):
        limiter.reserve("k", 2, 5)
    reservation.settle(1)  # only one of the four images was delivered
    reservation.settle(3)  # never grows back
    assert limiter.used("k") == 1
    limiter.reserve("k", 4, 5).settle(0)  # failed or cancelled: nothing counts
    assert limiter.used("k") == 1


def test_a_request_larger_than_the_limit_says_so() -> None:
    with pytest.raises(IpmRateLimitExceeded, match="more than the API key's limit of 3"):
        IpmLimiter().reserve("k", 4, 3)


def test_no_over_grant_across_threads() -> None:
    limiter = IpmLimiter()
    granted: list[int] = []
    barrier = threading.Barrier(50)

    def take() -> None:
        barrier.wait()
        try:
            limiter.reserve("k", 1, 20)
            granted.append(1)
        except IpmRateLimitExceeded:
            pass

    threads = [threading.Thread(target=take) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 20


# -- the commands ----------------------------------------------------------------------------------


def test_keys_commands(tmp_path: Path, database_url: str) -> None:
    code, out, err = cli(tmp_path, database_url, "keys", "create", "--name", "alice", "--ipm", "20", "--models", "a,b")
    assert code == 0, err
    secret = out.strip().splitlines()[-1]
    assert KEY_RE.match(secret)
    assert "alice" in err and "shown once" in err
    assert "warning: not served with this configuration: a, b" in err  # created all the same

    code, out, _ = cli(tmp_path, database_url, "keys", "create", "--name", "bob")
    bob = out.strip().splitlines()[-1]
    assert code == 0 and KEY_RE.match(bob)
    code, _, err = cli(tmp_path, database_url, "keys", "create", "--name", "alice")
    assert code == 1 and "already exists" in err

    code, out, _ = cli(tmp_path, database_url, "keys", "list")
    assert code == 0
    assert "alice" in out and "bob" in out and secret[:8] in out and "a, b" in out and "20" in out
    assert secret not in out and bob not in out and secret[8:14] not in out

    code, out, _ = cli(tmp_path, database_url, "keys", "revoke", "alice")
    assert code == 0 and "Revoked" in out
    code, _, err = cli(tmp_path, database_url, "keys", "revoke", "alice")
    assert code == 1 and "already revoked" in err
    code, _, err = cli(tmp_path, database_url, "keys", "revoke", "nobody")
    assert code == 1 and "no key named" in err

    store = AccountStore.open(tmp_path / "data", database_url)
    assert store.authenticate(secret) is None
    assert getattr(store.authenticate(bob), "name", None) == "bob"
    revoked = {k.name: k.revoked for k in store.list_keys()}
    assert revoked == {"alice": True, "bob": False}
    store.close()


def test_usage_command(tmp_path: Path, database_url: str) -> None:
    store = AccountStore.open(tmp_path / "data", database_url)
    now = datetime.now(UTC)
    store.record_usage(
        [
            UsageRecord("alice", "doubao-seedream-4-0-250828", 4, 65536, "ok", 900, "r1", ts=now),
            UsageRecord("alice", "doubao-seedream-4-0-250828", 0, 0, "ModelAccountIpmRateLimitExceeded", 1, "r2"),
            UsageRecord("bob", "doubao-seedream-4-0-250828", 1, 16384, "ok", 300, "r3", ts=now - timedelta(days=3)),
        ]
    )
    store.close()
    code, out, _ = cli(tmp_path, database_url, "usage")
    assert code == 0
    lines = [line for line in out.splitlines() if "alice" in line or "bob" in line or "total" in line]
    assert len(lines) == 3
    alice = lines[0].replace("│", " ").split()
    assert alice == ["alice", "doubao-seedream-4-0-250828", "2", "4", "65,536", "1", "0"]
    code, out, _ = cli(tmp_path, database_url, "usage", "--since", "24h")
    assert "alice" in out and "bob" not in out and "Usage since" in out
    code, out, _ = cli(tmp_path, database_url, "usage", "--key", "bob", "--since", "2020-01-01")
    assert "bob" in out and "alice" not in out
    code, out, _ = cli(tmp_path, database_url, "usage", "--key", "nobody")
    assert code == 0 and "no requests recorded" in out
    code, _, err = cli(tmp_path, database_url, "usage", "--since", "yesterday")
    assert code == 2 and "expected a duration" in err


def test_usage_and_keys_list_print_markup_in_names_literally(tmp_path: Path, database_url: str) -> None:
    store = AccountStore.open(tmp_path / "data", database_url)
    store.record_usage(
        [
            UsageRecord("alice", "[/evil]", 1, 16384, "ok", 300, "r1"),
            UsageRecord("[bold]mallory[/bold]", "[red]m", 1, 16384, "ok", 300, "r2"),
        ]
    )
    store.create_key("carol", models=["[/evil]", "[link=http://x]y"])
    store.close()
    code, out, _ = cli(tmp_path, database_url, "usage")
    assert code == 0, out
    assert "[/evil]" in out and "[bold]mallory[/bold]" in out and "[red]m" in out
    code, out, _ = cli(tmp_path, database_url, "keys", "list")
    assert code == 0, out
    assert "[/evil], [link=http://x]y" in out


def test_parse_since() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_since("1h", now) == now - timedelta(hours=1)
    assert parse_since("24h", now) == now - timedelta(days=1)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T08:00:00+08:00", now) == datetime(2026, 11, 1, tzinfo=UTC)
