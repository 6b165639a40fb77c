"""Throttling of failed authentication per client address (``accounts/throttle.py``), alone and through
:meth:`Accounts.authenticate` on a real store.

Against a real SQLite file in a temp dir, and against PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import pytest

import accounts_support
from accounts_support import Clock
from seedream_server.accounts import Accounts, AccountStore, AuthThrottle
from seedream_server.errors import AuthenticationError, AuthenticationThrottled, RateLimitError

database_url = accounts_support.database_url
store = accounts_support.store


def test_a_client_past_the_limit_waits_out_the_window() -> None:
    clock = Clock()
    throttle = AuthThrottle(3, clock=clock)
    for _ in range(3):
        throttle.check("10.0.0.1")
        throttle.failed("10.0.0.1")
        clock.now += 10
    with pytest.raises(AuthenticationThrottled) as info:
        throttle.check("10.0.0.1")
    assert info.value.status == 429 and info.value.code == "TooManyAuthenticationFailures"
    assert isinstance(info.value, RateLimitError)
    assert info.value.retry_after == 30  # the first failure leaves the window 60 s after it
    throttle.check("10.0.0.2")  # addresses are independent
    clock.now += 29.5
    with pytest.raises(AuthenticationThrottled) as info:
        throttle.check("10.0.0.1")
    assert info.value.retry_after == 1
    clock.now += 0.5
    throttle.check("10.0.0.1")  # one failure left the window: one more try
    throttle.failed("10.0.0.1")
    with pytest.raises(AuthenticationThrottled) as info:
        throttle.check("10.0.0.1")
    assert info.value.retry_after == 10


def test_the_table_of_failures_is_bounded() -> None:
    throttle = AuthThrottle(1, max_clients=3, clock=Clock())
    for i in range(5):
        throttle.failed(f"10.0.0.{i}")
    assert len(throttle) == 3
    throttle.check("10.0.0.0")  # forgotten: the least recently failed go first
    throttle.check("10.0.0.1")
    with pytest.raises(AuthenticationThrottled):
        throttle.check("10.0.0.4")
    with pytest.raises(ValueError, match="at least 1"):
        AuthThrottle(0)


async def test_authenticate_throttles_by_client_address(store: AccountStore) -> None:
    key, secret = store.create_key("alice")
    clock = Clock()
    accounts = Accounts(store, throttle=AuthThrottle(3, clock=clock))
    try:
        for header in ("Bearer sk-wrong", "Basic x", "Bearer sk-wrong"):
            with pytest.raises(AuthenticationError):
                await accounts.authenticate(header, "10.0.0.1")
        # the good key of another address works and wipes nobody's failures
        assert await accounts.authenticate(f"Bearer {secret}", "10.0.0.2") == key
        with pytest.raises(AuthenticationThrottled) as info:
            await accounts.authenticate(f"Bearer {secret}", "10.0.0.1")  # refused before the key is looked at
        assert info.value.retry_after == 60

        for _ in range(5):  # sending no key at all is no guess: never throttled for it
            with pytest.raises(AuthenticationError, match="no API key"):
                await accounts.authenticate(None, "10.0.0.3")
        assert await accounts.authenticate(f"Bearer {secret}", "10.0.0.3") == key
        for _ in range(5):  # no client address (an in-process caller): no throttling
            with pytest.raises(AuthenticationError, match="invalid or has been revoked"):
                await accounts.authenticate("Bearer sk-wrong")

        clock.now += 60
        assert await accounts.authenticate(f"Bearer {secret}", "10.0.0.1") == key
    finally:
        await accounts.aclose()


async def test_the_limit_is_a_constructor_argument(store: AccountStore) -> None:
    accounts = Accounts(store, auth_failure_limit=1)
    try:
        with pytest.raises(AuthenticationError):
            await accounts.authenticate("Bearer sk-wrong", "10.0.0.1")
        with pytest.raises(AuthenticationThrottled):
            await accounts.authenticate("Bearer sk-wrong", "10.0.0.1")
    finally:
        await accounts.aclose()
