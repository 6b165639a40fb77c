"""The images-per-minute limit, kept in the database (``accounts/limiter.py``): the sliding window, settling,
concurrency within one store and across two (two processes), and windows that survive a restart.

Against a real SQLite file in a temp dir, and against PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import accounts_support
from accounts_support import Clock
from seedream_server.accounts import AccountStore, IpmLimiter
from seedream_server.errors import IpmRateLimitExceeded

database_url = accounts_support.database_url
store = accounts_support.store


def test_sliding_window_and_retry_after(store: AccountStore) -> None:
    clock = Clock()
    limiter = IpmLimiter(store, clock=clock)
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


def test_settling_gives_back_undelivered_images(store: AccountStore) -> None:
    clock = Clock()
    limiter = IpmLimiter(store, clock=clock)
    reservation = limiter.reserve("k", 4, 5)
    with pytest.raises(IpmRateLimitExceeded):
        limiter.reserve("k", 2, 5)
    limiter.settle(reservation, 1)  # only one of the four images was delivered
    limiter.settle(reservation, 3)  # never grows back
    assert limiter.used("k") == 1
    limiter.settle(limiter.reserve("k", 4, 5), 0)  # failed or cancelled: nothing counts
    assert limiter.used("k") == 1


def test_check_reserves_nothing(store: AccountStore) -> None:
    clock = Clock()
    limiter = IpmLimiter(store, clock=clock)
    limiter.check("k", 5, 5)
    assert limiter.used("k") == 0
    limiter.reserve("k", 5, 5)
    clock.now += 30
    with pytest.raises(IpmRateLimitExceeded, match="limit of 5 images per minute is reached") as info:
        limiter.check("k", 1, 5)
    assert info.value.retry_after == 30


def test_a_request_larger_than_the_limit_says_so(store: AccountStore) -> None:
    with pytest.raises(IpmRateLimitExceeded, match="more than the API key's limit of 3"):
        IpmLimiter(store).reserve("k", 4, 3)


def test_rows_that_left_the_window_are_deleted(store: AccountStore) -> None:
    clock = Clock()
    limiter = IpmLimiter(store, clock=clock)
    for key in ("a", "a", "b"):
        limiter.reserve(key, 1, 10)
    clock.now += 60
    limiter.reserve("a", 1, 10)  # a key's reservation deletes its own old rows
    assert limiter.total() == 2
    assert limiter.sweep() == 1  # and the sweep at start everyone's
    assert limiter.total() == 1


def take_concurrently(limiters: list[IpmLimiter], attempts: int, limit: int) -> int:
    """``attempts`` threads released together, spread over ``limiters``, each reserving one image."""
    granted: list[int] = []
    barrier = threading.Barrier(attempts)

    def take(limiter: IpmLimiter) -> None:
        barrier.wait()
        try:
            limiter.reserve("k", 1, limit)
            granted.append(1)
        except IpmRateLimitExceeded:
            pass

    threads = [threading.Thread(target=take, args=(limiters[i % len(limiters)],)) for i in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(granted)


def test_no_over_grant_across_threads(store: AccountStore) -> None:
    assert take_concurrently([IpmLimiter(store)], 50, 20) == 20


def test_no_over_grant_across_two_stores_on_one_database(tmp_path: Path, database_url: str) -> None:
    stores = [AccountStore.open(tmp_path / "data", database_url) for _ in range(2)]  # two processes, as it were
    try:
        assert take_concurrently([IpmLimiter(s) for s in stores], 40, 15) == 15
        assert IpmLimiter(stores[0]).used("k") == IpmLimiter(stores[1]).used("k") == 15
    finally:
        for s in stores:
            s.close()


def test_windows_survive_a_restart(tmp_path: Path, database_url: str) -> None:
    clock = Clock()
    before = AccountStore.open(tmp_path / "data", database_url)
    IpmLimiter(before, clock=clock).reserve("k", 4, 5)
    before.close()

    clock.now += 10
    after = AccountStore.open(tmp_path / "data", database_url)
    limiter = IpmLimiter(after, clock=clock)
    assert limiter.used("k") == 4
    with pytest.raises(IpmRateLimitExceeded) as info:
        limiter.reserve("k", 2, 5)
    assert info.value.retry_after == 50
    limiter.reserve("k", 1, 5)
    after.close()
