"""S3-compatible storage (AWS S3, MinIO, R2, OSS, TOS, Ceph) through boto3, run in worker threads.

Keys are partitioned by the UTC day of the upload, ``PREFIX/YYYY/MM/DD/<name>``, so a bucket lifecycle
rule on ``PREFIX/`` expires them; without such a rule :meth:`S3Storage.sweep` deletes objects older than
the retention, listing keys in order and stopping at the first day that is still kept.

Links, stateless in both modes (any API process can serve or renew any link):

* ``presigned``: GET URLs of the bucket, signed with the process's AWS credentials, valid ``url_ttl``;
* ``proxy``: ``{base_url}/files/YYYY/MM/DD/<name>?expires=&signature=`` signed with our HMAC secret (the
  same ``signing_secret`` on every API process); the path after ``/files/`` is the key below the prefix,
  so the name -> key mapping needs no lookup, and the route streams the object from the bucket.

boto3 is synchronous; its clients are thread-safe, so each call runs in a worker thread
(``asyncio.to_thread``). aioboto3/aiobotocore would save those threads but pins botocore to its own
release train; the thread hop costs far less than an image encode (``bench/bench_scaleout.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlencode, urlsplit

from ..errors import InternalServiceError, NotFoundError
from .base import IMAGE_NAME_PATTERN, ImageFile, Storage, StoredImage, content_type
from .signing import UrlSigner

log = logging.getLogger("seedream_server.storage")

URL_MODES = ("presigned", "proxy")
MAX_PRESIGNED_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most 7 days
CHUNK_BYTES = 256 * 1024
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_LOCATOR = re.compile(r"^([0-9]{4})/([0-9]{2})/([0-9]{2})/([^/]+)\Z")
_MISSING = {"NoSuchKey", "404", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix without slashes at its ends); ValueError when malformed."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"storage {url!r} is not s3://BUCKET/PREFIX")
    return parts.netloc, parts.path.strip("/")


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class S3Storage(Storage):
    """Images in ``bucket`` under ``prefix``; ``client`` is a boto3 S3 client (thread-safe)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        *,
        signer: UrlSigner,
        base_url: str,
        url_mode: str = "presigned",
        url_ttl_s: float = 24 * 3600,
        retention_s: float = 24 * 3600,
    ) -> None:
        if url_mode not in URL_MODES:
            raise ValueError(f"s3_url_mode must be one of {', '.join(URL_MODES)}, not {url_mode!r}")
        if url_mode == "presigned" and url_ttl_s > MAX_PRESIGNED_S:
            raise ValueError("url_ttl is at most 168 hours with presigned S3 links (a SigV4 limit); use proxy links")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.url_mode = url_mode
        self.url_ttl_s = url_ttl_s
        self.retention_s = retention_s

    @classmethod
    def from_settings(cls, url: str, endpoint_url: str, **kwargs: Any) -> S3Storage:
        """A client from the standard AWS credential chain, retrying throttling with backoff (botocore)."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise ValueError("S3 storage needs boto3: pip install 'seedream-server[s3]'") from exc
        bucket, prefix = parse_s3_url(url)
        config = Config(
            retries={"max_attempts": 8, "mode": "adaptive"},  # SlowDown/503 and throttling: backoff + client rate
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=32,
            signature_version="s3v4",
            # S3-compatible stores differ in the newer default checksums: send them only where S3 requires one
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)
        return cls(client, bucket, prefix, **kwargs)

    # -- keys and links -------------------------------------------------------------------------------------

    def key(self, locator: str) -> str:
        return f"{self.prefix}/{locator}" if self.prefix else locator

    @staticmethod
    def locator(name: str, when: float) -> str:
        """``YYYY/MM/DD/name`` for an upload at ``when`` (UTC day)."""
        day = dt.datetime.fromtimestamp(when, dt.UTC)
        return f"{day:%Y/%m/%d}/{name}"

    def _checked_locator(self, locator: str) -> tuple[str, str]:
        match = _LOCATOR.match(locator)
        if match is None or not IMAGE_NAME_PATTERN.match(match.group(4)):
            raise NotFoundError(f"The file {locator!r} does not exist.")
        return locator, match.group(4)

    def url(self, name: str) -> str:
        """A fresh link for ``name`` given as its locator ``YYYY/MM/DD/<name>`` (what links carry)."""
        locator, _ = self._checked_locator(name)
        if self.url_mode == "proxy":
            expires = int(time.time() + self.url_ttl_s)
            query = urlencode({"expires": expires, "signature": self.signer.signature(locator, expires)})
            return f"{self.base_url}/files/{locator}?{query}"
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(locator)},
            ExpiresIn=int(self.url_ttl_s),
        )
        return url

    # -- write side -----------------------------------------------------------------------------------------

    async def put(self, name: str, data: bytes) -> StoredImage:
        if not IMAGE_NAME_PATTERN.match(name):
            raise ValueError(f"invalid image name {name!r}")
        locator = self.locator(name, time.time())
        try:
            await asyncio.to_thread(
                self.client.put_object,
                Bucket=self.bucket,
                Key=self.key(locator),
                Body=data,
                ContentType=content_type(name),
            )
        except Exception as exc:  # botocore gave up after its retries: no link to a missing object
            log.error("storing %s in s3://%s failed: %s", name, self.bucket, exc)
            raise InternalServiceError("Storing the image failed; please retry the request.") from exc
        return StoredImage(name=name, url=self.url(locator))

    # -- read side (proxy links) ----------------------------------------------------------------------------

    async def open(self, name: str, expires: str | None, signature: str | None) -> ImageFile:
        locator, image_name = self._checked_locator(name)
        self.signer.verify(locator, expires, signature)
        try:
            response = await asyncio.to_thread(self.client.get_object, Bucket=self.bucket, Key=self.key(locator))
        except Exception as exc:
            if _error_code(exc) in _MISSING:
                raise NotFoundError(
                    f"The file {image_name!r} does not exist or has been deleted after retention."
                ) from None
            log.error("reading %s from s3://%s failed: %s", locator, self.bucket, exc)
            raise InternalServiceError("Reading the image from storage failed.") from exc
        body = response["Body"]
        return ImageFile(
            name=image_name,
            content_type=content_type(image_name),
            body=_chunks(body),
            size=int(response["ContentLength"]),
        )

    # -- retention ------------------------------------------------------------------------------------------

    def _lifecycle_expires(self) -> bool:
        """Whether an enabled lifecycle rule with an expiration covers our prefix."""
        try:
            rules = self.client.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
        except Exception as exc:
            if _error_code(exc) == "NoSuchLifecycleConfiguration":
                return False
            raise
        for rule in rules:
            rule_filter = rule.get("Filter", {})
            rule_prefix = rule_filter.get("Prefix", rule_filter.get("And", {}).get("Prefix", rule.get("Prefix", "")))
            if rule.get("Status") == "Enabled" and "Expiration" in rule and self.key("").startswith(rule_prefix):
                return True
        return False

    def _sweep(self, now: float) -> int:
        if self._lifecycle_expires():
            return 0
        cutoff = now - self.retention_s
        last_day = self.key(dt.datetime.fromtimestamp(cutoff, dt.UTC).strftime("%Y/%m/%d/"))
        paginator = self.client.get_paginator("list_objects_v2")
        doomed: list[str] = []
        deleted = 0
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.key("")):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key > last_day and not key.startswith(last_day):
                    break  # keys sort by day: the rest are younger than the cutoff's day
                if item["LastModified"].timestamp() < cutoff:
                    doomed.append(key)
            else:
                deleted += self._delete(doomed)
                doomed = []
                continue
            break
        return deleted + self._delete(doomed)

    def _delete(self, keys: list[str]) -> int:
        deleted = 0
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
            result = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            deleted += len(batch) - len(result.get("Errors", []))
        return deleted

    async def sweep(self) -> int:
        return await asyncio.to_thread(self._sweep, time.time())

    async def aclose(self) -> None:
        await asyncio.to_thread(self.client.close)


async def _chunks(body: Any) -> AsyncGenerator[bytes, None]:
    """A botocore StreamingBody read in worker threads; closed however the reader stops."""
    try:
        while chunk := await asyncio.to_thread(body.read, CHUNK_BYTES):
            yield chunk
    finally:
        body.close()
