"""The usage ledger: summaries, a job's row from admission to its end, crash recovery (``accounts/ledger.py``).

Against a real SQLite file in a temp dir, and against PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import accounts_support
from accounts_support import dead_pid
from seedream_server.accounts import USAGE, AccountError, AccountStore, IpmLimiter, Owner, UsageRecord, pid_alive

database_url = accounts_support.database_url
store = accounts_support.store


def running_record(request_id: str, key_name: str = "alice") -> UsageRecord:
    return UsageRecord(key_name, "m1", 0, 0, "running", 0, request_id)


def status_of(store: AccountStore) -> dict[str, tuple[str, int]]:
    return {r.request_id: (r.status, r.images) for r in store.usage_records()}


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


def test_a_job_row_is_opened_running_updated_and_closed(store: AccountStore) -> None:
    store.open_entry(UsageRecord("alice", "m1", 0, 0, "ok", 0, "job-1"))  # opened running whatever it says
    assert status_of(store) == {"job-1": ("running", 0)}
    store.update_entry("job-1", 1, 100)
    store.update_entry("job-1", 2, 200, duration_ms=40)
    assert status_of(store) == {"job-1": ("running", 2)}
    with store.engine.connect() as conn:
        row = conn.execute(select(USAGE.c.tokens, USAGE.c.duration_ms, USAGE.c.host, USAGE.c.pid)).one()
    assert tuple(row) == (200, 40, store.owner.host, os.getpid())

    store.close_entry("job-1", images=3, tokens=300, status="ok", duration_ms=90)
    [record] = store.usage_records()
    assert (record.status, record.images, record.tokens, record.duration_ms) == ("ok", 3, 300, 90)
    with pytest.raises(AccountError, match="no running ledger row"):
        store.close_entry("job-1", images=3, tokens=300, status="ok", duration_ms=90)
    with pytest.raises(AccountError, match="no running ledger row"):
        store.update_entry("job-2", 1, 1)
    with pytest.raises(AccountError, match="final status"):
        store.close_entry("job-1", images=0, tokens=0, status="running", duration_ms=0)


def test_a_request_id_has_at_most_one_running_row(store: AccountStore) -> None:
    store.open_entry(running_record("job-1"))
    with pytest.raises(AccountError, match="already has a running ledger row"):
        store.open_entry(running_record("job-1"))
    store.close_entry("job-1", images=0, tokens=0, status="cancelled", duration_ms=1)
    store.open_entry(running_record("job-1"))  # only running rows are unique
    store.record_usage([UsageRecord("alice", "m1", 0, 0, "ok", 1, "job-1")])
    assert len(store.usage_records()) == 3


def test_recovery_interrupts_the_running_rows_of_dead_processes_of_this_host(
    tmp_path: Path, database_url: str, store: AccountStore
) -> None:
    host, gone = store.owner.host, dead_pid()
    assert not pid_alive(gone) and pid_alive(os.getppid())
    writers = {
        "dead": Owner(host, gone, "a"),
        "earlier-me": Owner(host, os.getpid(), "an earlier incarnation"),  # our pid, another process
        "live": Owner(host, os.getppid(), "b"),
        "me": Owner.current(),
        "other-host": Owner("elsewhere.example", gone, "c"),  # only its own host can tell; left alone
    }
    for request_id, owner in writers.items():
        process = AccountStore.open(tmp_path / "data", database_url, owner=owner)
        process.open_entry(running_record(request_id))
        process.update_entry(request_id, 2, 20)
        process.close()

    assert store.recover_interrupted() == 2
    assert status_of(store) == {
        "dead": ("interrupted", 2),
        "earlier-me": ("interrupted", 2),
        "live": ("running", 2),
        "me": ("running", 2),
        "other-host": ("running", 2),
    }
    assert store.recover_interrupted() == 0
    [summary] = store.usage_summary()
    assert (summary.requests, summary.images, summary.errors, summary.cancelled) == (5, 10, 2, 0)


def test_recovery_settles_the_reservations_of_interrupted_jobs_to_their_counted_images(
    tmp_path: Path, database_url: str, store: AccountStore
) -> None:
    crashed = AccountStore.open(tmp_path / "data", database_url, owner=Owner(store.owner.host, dead_pid(), "a"))
    limiter = IpmLimiter(crashed)
    limiter.reserve("k", 10, 100, request_id="crashed")  # a group of 10 planned
    limiter.reserve("k", 5, 100, request_id="other")  # another job's reservation is left alone
    crashed.open_entry(running_record("crashed"))
    crashed.update_entry("crashed", 3, 30)  # three images delivered before the crash
    crashed.close()

    assert store.recover_interrupted() == 1
    assert IpmLimiter(store).used("k") == 3 + 5
