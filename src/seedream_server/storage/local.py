"""Local-directory storage: atomic durable writes, signed expiring links, and a retention sweeper."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from ..errors import NotFoundError
from .base import IMAGE_NAME_PATTERN, ImageFile, Storage, StoredImage, content_type
from .signing import UrlSigner


class LocalStorage(Storage):
    """Images under ``root``; served by the app at ``{base_url}/files/{name}?expires=&signature=``."""

    def __init__(self, root: Path, signer: UrlSigner, base_url: str, retention_s: float) -> None:
        self.root = root
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.retention_s = retention_s
        root.mkdir(parents=True, exist_ok=True)

    def _write(self, name: str, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.root / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def signed_url(self, name: str, expires: int) -> str:
        query = urlencode({"expires": expires, "signature": self.signer.signature(name, expires)})
        return f"{self.base_url}/files/{name}?{query}"

    async def put(self, name: str, data: bytes) -> StoredImage:
        if not IMAGE_NAME_PATTERN.match(name):
            raise ValueError(f"invalid image name {name!r}")
        await asyncio.to_thread(self._write, name, data)
        return StoredImage(name=name, url=self.url(name))

    def url(self, name: str) -> str:
        return self.signed_url(name, int(time.time() + self.retention_s))

    async def open(self, name: str, expires: str | None, signature: str | None) -> ImageFile:
        path = self.open_path(name, expires, signature)
        return ImageFile(name=name, content_type=content_type(name), path=path)

    def open_path(self, name: str, expires: str | None, signature: str | None) -> Path:
        """The file behind a link: 404 for names outside the pattern, 403 for a bad or old signature."""
        if not IMAGE_NAME_PATTERN.match(name):
            raise NotFoundError(f"The file {name!r} does not exist.")
        self.signer.verify(name, expires, signature)
        path = self.root / name
        if not path.is_file():
            raise NotFoundError(f"The file {name!r} does not exist or has been deleted after retention.")
        return path

    def _sweep(self, now: float) -> int:
        deleted = 0
        for entry in os.scandir(self.root):
            try:
                stale_tmp = entry.name.startswith(".tmp-") and entry.stat().st_mtime < now - 3600
                expired = IMAGE_NAME_PATTERN.match(entry.name) and entry.stat().st_mtime < now - self.retention_s
                if stale_tmp or expired:
                    os.unlink(entry.path)
                    deleted += 1
            except FileNotFoundError:
                continue
        return deleted

    async def sweep(self) -> int:
        return await asyncio.to_thread(self._sweep, time.time())
