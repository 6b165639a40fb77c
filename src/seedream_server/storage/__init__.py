"""Where delivered images live: the ``Storage`` ABC, local files behind signed links, an S3-compatible
bucket, URL signing; :func:`build_storage` picks one from the settings."""

from __future__ import annotations

from pathlib import Path

from ..config import Settings
from .base import ImageFile, Storage, StoredImage
from .local import LocalStorage
from .signing import UrlSigner, load_or_create_secret


def build_storage(settings: Settings, signer: UrlSigner) -> Storage:
    """``storage`` empty: ``DATA_DIR/images``; ``s3://BUCKET/PREFIX``: the bucket (boto3, the ``s3`` extra)."""
    if not settings.storage:
        return LocalStorage(
            Path(settings.data_dir) / "images", signer, settings.base_url, settings.retention_hours * 3600
        )
    if settings.storage.startswith("s3://"):
        from .s3 import S3Storage  # boto3 is an optional extra

        return S3Storage.from_settings(
            settings.storage,
            settings.s3_endpoint_url,
            signer=signer,
            base_url=settings.base_url,
            url_mode=settings.s3_url_mode,
            url_ttl_s=settings.url_ttl * 3600,
            retention_s=settings.retention_hours * 3600,
        )
    raise ValueError(f"storage {settings.storage!r}: expected empty (local files) or s3://BUCKET/PREFIX")


__all__ = [
    "ImageFile",
    "LocalStorage",
    "Storage",
    "StoredImage",
    "UrlSigner",
    "build_storage",
    "load_or_create_secret",
]
