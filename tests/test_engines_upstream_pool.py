"""The upstream engines' parts without a network: the key pool (rotation, cooldown, scrubbing), the retry
policy (backoff with jitter, Retry-After), replica routing (least in flight, passive health), and the
mapping of upstream answers to our errors (codes and params kept, keys never shown)."""

from __future__ import annotations

import random

import httpx
import pytest

from seedream_server.engines.upstream.errors import error_from_code, status_error, transport_error
from seedream_server.engines.upstream.keys import KeyPool, scrub
from seedream_server.engines.upstream.replicas import ReplicaSet
from seedream_server.engines.upstream.retry import MAX_RETRY_AFTER_S, Retryable, RetryPolicy, parse_retry_after
from seedream_server.errors import (
    BadRequestError,
    RateLimitError,
    SeedreamError,
    SensitiveContentDetected,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

KEY_A, KEY_B, KEY_C = "ak-AAAAAAAAAAAAAAAA", "ak-BBBBBBBBBBBBBBBB", "ak-CCCCCCCCCCCCCCCC"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- key pool ------------------------------------------------------------------------------------


def test_keys_are_taken_in_turn() -> None:
    pool = KeyPool([KEY_A, KEY_B, KEY_C])
    assert [pool.pick() for _ in range(4)] == [KEY_A, KEY_B, KEY_C, KEY_A]


def test_a_cooled_key_is_skipped_until_it_comes_back() -> None:
    clock = Clock()
    pool = KeyPool([KEY_A, KEY_B], clock=clock)
    pool.cool_down(KEY_A, 60)
    assert [pool.pick() for _ in range(3)] == [KEY_B, KEY_B, KEY_B]
    clock.now += 61
    assert {pool.pick(), pool.pick()} == {KEY_A, KEY_B}


def test_when_every_key_cools_the_first_back_is_used() -> None:
    clock = Clock()
    pool = KeyPool([KEY_A, KEY_B], clock=clock)
    pool.cool_down(KEY_A, 60)
    pool.cool_down(KEY_B, 10)
    assert pool.pick() == KEY_B


def test_excluded_keys_and_empty_pools() -> None:
    pool = KeyPool([KEY_A, KEY_B])
    assert pool.pick(exclude=[KEY_A]) == KEY_B
    assert pool.pick(exclude=[KEY_A, KEY_B]) is None
    assert KeyPool([]).pick() is None


def test_a_probe_does_not_move_the_rotation() -> None:
    pool = KeyPool([KEY_A, KEY_B])
    assert pool.pick(advance=False) == KEY_A
    assert pool.pick() == KEY_A


def test_the_pool_never_shows_a_key() -> None:
    pool = KeyPool([KEY_A, KEY_B])
    shown = f"{pool!r} {pool.label(KEY_A)} {pool.label(KEY_B)}"
    assert KEY_A not in shown and KEY_B not in shown
    assert pool.label(KEY_B).startswith("key #2")


def test_scrub_removes_keys_and_credentials_in_urls() -> None:
    text = f"bad key {KEY_A} for https://user:pw@ark.example/api/v3?api_key=s3cret&x=1"
    cleaned = scrub(text, [KEY_A])
    assert KEY_A not in cleaned and "user:pw" not in cleaned and "s3cret" not in cleaned
    assert "https://***@ark.example/api/v3?api_key=***&x=1" in cleaned


# --- retry policy ------------------------------------------------------------------------------------


def test_backoff_grows_with_full_jitter_and_stops_after_max_retries() -> None:
    policy = RetryPolicy(max_retries=3, base_s=0.5, cap_s=8.0, rng=random.Random(1))
    failure = Retryable(UpstreamError("x"))
    for attempt in range(3):
        delay = policy.delay(attempt, failure)
        assert delay is not None and 0 <= delay <= 0.5 * 2**attempt
    assert policy.delay(3, failure) is None
    assert RetryPolicy(max_retries=0).delay(0, failure) is None


def test_retry_after_is_honoured_unless_too_long() -> None:
    policy = RetryPolicy(max_retries=3)
    assert policy.delay(0, Retryable(RateLimitError("x"), retry_after=2.0)) == 2.0
    assert policy.delay(0, Retryable(RateLimitError("x"), retry_after=MAX_RETRY_AFTER_S + 1)) is None


def test_another_target_is_tried_at_once() -> None:
    assert RetryPolicy(max_retries=1).delay(0, Retryable(UpstreamUnavailable("x"), other_target=True)) == 0.0


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --- replicas --------------------------------------------------------------------------------------------


def test_least_in_flight_and_passive_health() -> None:
    clock = Clock()
    replicas = ReplicaSet(["http://a/v1", "http://b/v1"], clock=clock, down_s=15)
    a, b = replicas.replicas
    with replicas.using(replicas.pick()) as first:
        assert first is a
        assert replicas.pick() is b  # a has a call in flight
    replicas.failed(b, unreachable=True)
    assert replicas.pick() is a and not b.reachable
    assert replicas.pick(exclude=[a]) is a  # b is out: a again, even though this call tried it
    clock.now += 16
    assert replicas.pick(exclude=[a]) is b  # back in rotation


def test_when_every_replica_is_out_the_first_back_is_tried() -> None:
    clock = Clock()
    replicas = ReplicaSet(["http://a/v1", "http://b/v1"], clock=clock, down_s=15)
    a, b = replicas.replicas
    replicas.failed(a)
    clock.now += 5
    replicas.failed(b)
    assert replicas.pick() is a


# --- mapping upstream answers ------------------------------------------------------------------------------


def answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "https://ark.example/api/v3/images/generations")
    if body is None:
        return httpx.Response(status, content=b"<html>oops</html>", headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_an_upstream_400_keeps_its_code_and_param() -> None:
    body = {"error": {"code": "InvalidParameter", "message": "bad size Request id: 123", "param": "size"}}
    error = status_error(answer(400, body), [])
    assert isinstance(error, BadRequestError)
    assert (error.status, error.code, error.param, error.message) == (400, "InvalidParameter", "size", "bad size")


def test_an_openai_style_400_without_a_code() -> None:
    body = {"error": {"message": "Invalid size", "type": "invalid_request_error", "param": "size", "code": None}}
    error = status_error(answer(400, body), [])
    assert isinstance(error, SeedreamError) and (error.status, error.code, error.param) == (
        400,
        "InvalidParameter",
        "size",
    )


def test_a_sensitive_content_400_keeps_its_code() -> None:
    body = {"error": {"code": "InputTextSensitiveContentDetected", "message": "no"}}
    error = status_error(answer(400, body), [])
    assert isinstance(error, SensitiveContentDetected) and error.code == "InputTextSensitiveContentDetected"


@pytest.mark.parametrize(
    ("status", "kind", "status_out", "code"),
    [
        (401, UpstreamError, 502, "UpstreamServiceError"),
        (403, UpstreamError, 502, "UpstreamServiceError"),
        (500, UpstreamError, 502, "UpstreamServiceError"),
        (502, UpstreamError, 502, "UpstreamServiceError"),
        (503, UpstreamUnavailable, 503, "UpstreamUnavailable"),
        (504, UpstreamTimeout, 504, "UpstreamTimeout"),
        (429, RateLimitError, 429, "ServerOverloaded"),
    ],
)
def test_retryable_answers(status: int, kind: type, status_out: int, code: str) -> None:
    failure = status_error(answer(status), [])
    assert isinstance(failure, Retryable)
    assert isinstance(failure.error, kind) and (failure.error.status, failure.error.code) == (status_out, code)
    assert failure.refused_key == (status in (401, 403))
    assert "upstream" in failure.error.message


def test_429_keeps_retry_after_and_the_upstream_code() -> None:
    body = {"error": {"code": "ModelAccountRpmRateLimitExceeded", "message": "slow down"}}
    failure = status_error(answer(429, body, **{"retry-after": "2"}), [])
    assert isinstance(failure, Retryable) and failure.retry_after == 2.0
    assert failure.error.code == "ModelAccountRpmRateLimitExceeded" and failure.error.retry_after == 2


def test_a_refused_key_never_reaches_the_message() -> None:
    body = {"error": {"code": "AuthenticationError", "message": f"the API key {KEY_A} is invalid"}}
    failure = status_error(answer(401, body), [KEY_A])
    assert isinstance(failure, Retryable)
    assert (
        KEY_A not in failure.error.message
        and KEY_A not in str(failure)
        and "AuthenticationError" in failure.error.message
    )


def test_a_404_is_the_upstreams_failure_not_the_clients() -> None:
    error = status_error(answer(404, {"error": {"code": "InvalidEndpointOrModel.NotFound", "message": "no"}}), [])
    assert isinstance(error, UpstreamError) and error.status == 502


def test_transport_errors() -> None:
    request = httpx.Request("POST", "http://user:pw@10.0.0.1/v1")
    refused = transport_error(httpx.ConnectError("[Errno 111] refused http://user:pw@10.0.0.1", request=request), 5)
    assert isinstance(refused.error, UpstreamUnavailable) and "pw" not in refused.error.message
    slow = transport_error(httpx.ReadTimeout("timed out", request=request), 5)
    assert isinstance(slow.error, UpstreamTimeout) and "5 s" in slow.error.message
    cut = transport_error(httpx.RemoteProtocolError("peer closed", request=request), 5)
    assert isinstance(cut.error, UpstreamError) and cut.error.status == 502


def test_per_image_codes() -> None:
    assert isinstance(error_from_code("OutputImageSensitiveContentDetected", "x"), SensitiveContentDetected)
    assert error_from_code("InternalServiceError", "x").code == "InternalServiceError"
    assert isinstance(error_from_code(None, "x"), UpstreamError)
