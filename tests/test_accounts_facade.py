"""The async facade (``accounts/facade.py``): start-up recovery, the quota check, reservations and a job's
ledger row, as the service drives them.

Against a real SQLite file in a temp dir, and against PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import accounts_support
from accounts_support import Clock
from seedream_server.accounts import Accounts, AccountStore, IpmLimiter, Owner, UsageRecord
from seedream_server.errors import IpmRateLimitExceeded

database_url = accounts_support.database_url
store = accounts_support.store


def record(request_id: str, status: str = "running") -> UsageRecord:
    return UsageRecord("alice", "m1", 0, 0, status, 0, request_id)


async def test_check_quota_refuses_a_spent_key_and_reserves_nothing(store: AccountStore) -> None:
    key, _ = store.create_key("alice", ipm=2)
    clock = Clock()
    accounts = Accounts(store, IpmLimiter(store, clock=clock))
    try:
        await accounts.check_quota(key)
        assert accounts.limiter.used("alice") == 0
        reservation = await accounts.reserve(key, 2)
        assert (reservation.key_name, reservation.images) == ("alice", 2)
        clock.now += 15
        with pytest.raises(IpmRateLimitExceeded, match="limit of 2 images per minute is reached") as info:
            await accounts.check_quota(key)
        assert info.value.retry_after == 45
        await reservation.settle(1)
        await accounts.check_quota(key)
        with pytest.raises(IpmRateLimitExceeded, match="more than the API key's limit of 2"):
            await accounts.reserve(key, 3)
        assert accounts.limiter.used("alice") == 1
    finally:
        await accounts.aclose()


async def test_reservations_outlive_the_accounts_object(tmp_path: Path, database_url: str) -> None:
    clock = Clock()
    first = AccountStore.open(tmp_path / "data", database_url)
    key, _ = first.create_key("alice", ipm=3)
    accounts = Accounts(first, IpmLimiter(first, clock=clock))
    await accounts.start()
    await accounts.reserve(key, 3)
    await accounts.aclose()

    second = AccountStore.open(tmp_path / "data", database_url)
    restarted = Accounts(second, IpmLimiter(second, clock=clock))
    await restarted.start()
    try:
        with pytest.raises(IpmRateLimitExceeded):
            await restarted.check_quota(key)
        clock.now += 60
        await restarted.reserve(key, 3)
    finally:
        await restarted.aclose()


async def test_a_job_row_through_the_facade(store: AccountStore, caplog: pytest.LogCaptureFixture) -> None:
    accounts = Accounts(store)
    try:
        await accounts.open_entry(record("job-1"))
        assert [(r.status, r.images) for r in store.usage_records()] == [("running", 0)]
        await accounts.update_entry("job-1", 1, 10)
        await accounts.update_entry("job-1", 2, 20)
        assert [(r.status, r.images, r.tokens) for r in store.usage_records()] == [("running", 2, 20)]
        await accounts.close_entry("job-1", images=2, tokens=20, status="cancelled", duration_ms=55)
        [row] = store.usage_records()
        assert (row.status, row.images, row.tokens, row.duration_ms) == ("cancelled", 2, 20, 55)

        with caplog.at_level(logging.ERROR, logger="seedream_server.accounts"):
            await accounts.update_entry("job-1", 3, 30)  # no running row: logged, never raised
            await accounts.close_entry("job-1", images=3, tokens=30, status="ok", duration_ms=1)
        assert sum("could not" in r.getMessage() for r in caplog.records) == 2

        accounts.record(UsageRecord("alice", "m1", 0, 0, "AccessDenied", 1, "refused-1"))
        await accounts.drain()
        assert [r.status for r in store.usage_records()] == ["cancelled", "AccessDenied"]
    finally:
        await accounts.aclose()


async def test_start_marks_rows_of_a_dead_process_interrupted(
    tmp_path: Path, database_url: str, store: AccountStore, caplog: pytest.LogCaptureFixture
) -> None:
    gone = await asyncio.to_thread(accounts_support.dead_pid)
    crashed = AccountStore.open(tmp_path / "data", database_url, owner=Owner(store.owner.host, gone, "x"))
    crashed.open_entry(record("crashed"))
    crashed.update_entry("crashed", 3, 30)
    crashed.close()
    accounts = Accounts(store)
    await accounts.open_entry(record("ours"))  # a job of this very process stays running
    with caplog.at_level(logging.WARNING, logger="seedream_server.accounts"):
        await accounts.start()
    try:
        assert {r.request_id: (r.status, r.images) for r in store.usage_records()} == {
            "crashed": ("interrupted", 3),
            "ours": ("running", 0),
        }
        assert any("1 request(s) left running by a dead process" in r.getMessage() for r in caplog.records)
    finally:
        await accounts.aclose()
