"""S3-compatible storage (SPEC §10, §14) against a real S3 API: a moto server on loopback.

Presigned links fetched from the bucket, proxy links streamed through ``/files/YYYY/MM/DD/<name>``,
date-partitioned keys, a failed upload refused (no link to a missing object), the sweeper with and
without a bucket lifecycle rule, and the retry configuration.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from seedream_server.config import load_settings
from seedream_server.errors import InternalServiceError, NotFoundError
from seedream_server.http import create_app
from seedream_server.storage import UrlSigner
from seedream_server.storage.s3 import S3Storage, parse_s3_url
from support import GENERATIONS, assert_error, body, decode, running

NAME = "0123456789abcdef0123456789abcdef_0.jpeg"
SECRET = b"s" * 32


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard credential chain, read from the environment (moto accepts any keys)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def bucket(moto_url: str, aws_env: None, request: pytest.FixtureRequest) -> str:
    name = f"b-{request.node.name.lower().replace('_', '-')[:40]}-{time.monotonic_ns() % 10**6}"
    s3_client(moto_url).create_bucket(Bucket=name)
    return name


def s3_client(moto_url: str) -> Any:
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")


def make_store(moto_url: str, bucket: str, **kwargs: Any) -> S3Storage:
    return S3Storage.from_settings(
        f"s3://{bucket}/img", moto_url, signer=UrlSigner(SECRET), base_url="http://127.0.0.1:8000", **kwargs
    )


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    for bad in ("s3:///x", "http://bucket/x", "s3://bucket/x?y=1"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


def test_settings_refuse_a_bad_mode_or_too_long_presigned_links(moto_url: str, bucket: str) -> None:
    with pytest.raises(ValueError, match="s3_url_mode"):
        make_store(moto_url, bucket, url_mode="public")
    with pytest.raises(ValueError, match="168 hours"):
        make_store(moto_url, bucket, url_ttl_s=8 * 24 * 3600)


def test_throttling_is_retried_with_backoff(moto_url: str, bucket: str) -> None:
    retries = make_store(moto_url, bucket).client.meta.config.retries
    assert retries["mode"] == "adaptive" and retries["total_max_attempts"] >= 5


async def test_presigned_link_reaches_the_bytes_under_a_dated_key(moto_url: str, bucket: str) -> None:
    store = make_store(moto_url, bucket, url_ttl_s=3600)
    stored = await store.put(NAME, b"\xff\xd8\xffdata")
    day = dt.datetime.now(dt.UTC).strftime("%Y/%m/%d")
    keys = [item["Key"] for item in s3_client(moto_url).list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"img/{day}/{NAME}"]
    async with httpx.AsyncClient() as client:
        response = await client.get(stored.url)
    assert response.status_code == 200 and response.content == b"\xff\xd8\xffdata"
    assert "X-Amz-Expires=3600" in stored.url
    await store.aclose()


async def test_failed_upload_is_an_error_never_a_link(moto_url: str, aws_env: None) -> None:
    store = make_store(moto_url, "no-such-bucket")
    with pytest.raises(InternalServiceError, match="Storing the image failed"):
        await store.put(NAME, b"data")


async def test_sweeper_deletes_past_retention_unless_a_lifecycle_rule_does(moto_url: str, bucket: str) -> None:
    store = make_store(moto_url, bucket, retention_s=3600)
    await store.put(NAME, b"old")
    await store.put(NAME.replace("_0", "_1"), b"old too")
    assert await store.sweep() == 0  # young
    rule = {"ID": "expire", "Status": "Enabled", "Filter": {"Prefix": "img/"}, "Expiration": {"Days": 1}}
    client = s3_client(moto_url)
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [rule]})
    assert store._sweep(time.time() + 2 * 86400) == 0  # the bucket expires them itself
    client.delete_bucket_lifecycle(Bucket=bucket)
    assert store._sweep(time.time() + 2 * 86400) == 2
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)


async def test_proxy_links_stream_from_the_bucket(moto_url: str, bucket: str, tmp_path: Any) -> None:
    settings = load_settings(
        overrides={
            "data_dir": str(tmp_path / "data"),
            "auth": False,
            "storage": f"s3://{bucket}/img",
            "s3_endpoint_url": moto_url,
            "s3_url_mode": "proxy",
        },
        environ={},
    )
    app = create_app(settings)
    async with running(app) as client:
        response = await client.post(GENERATIONS, json=body(size="1K", response_format="url"))
        assert response.status_code == 200, response.text
        url = response.json()["data"][0]["url"]
        path = urlsplit(url).path
        day = dt.datetime.now(dt.UTC).strftime("%Y/%m/%d")
        assert path.startswith(f"/files/{day}/")
        image = await client.get(url)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.headers["content-length"] == str(len(image.content))
        key = f"img/{path.removeprefix('/files/')}"
        assert image.content == s3_client(moto_url).get_object(Bucket=bucket, Key=key)["Body"].read()
        assert decode(image.content).size[0] > 0
        head = await client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert_error(await client.get(url.replace("signature=", "signature=0")), 403, "AccessDenied")
        other_day = url.replace(f"/files/{day}/", "/files/2001/01/01/")
        assert_error(await client.get(other_day), 403, "AccessDenied")  # the date is signed too
        s3_client(moto_url).delete_object(Bucket=bucket, Key=key)
        assert_error(await client.get(url), 404, "InvalidEndpointOrModel.NotFound")


async def test_a_failed_upload_fails_the_request(moto_url: str, aws_env: None, tmp_path: Any) -> None:
    overrides = {"data_dir": str(tmp_path / "data"), "auth": False, "storage": "s3://missing-bucket/x"}
    app = create_app(load_settings(overrides={**overrides, "s3_endpoint_url": moto_url}, environ={}))
    async with running(app) as client:
        response = await client.post(GENERATIONS, json=body(size="1K", response_format="url"))
        error = assert_error(response, 500, "InternalServiceError")
        assert "Storing the image failed" in error["message"]


async def test_open_refuses_names_outside_the_layout(moto_url: str, bucket: str) -> None:
    store = make_store(moto_url, bucket)
    for bad in (NAME, f"2026/1/01/{NAME}", "2026/01/01/../x.jpeg", "2026/01/01/evil.txt"):
        with pytest.raises(NotFoundError):
            await store.open(bad, "1", "0" * 64)
