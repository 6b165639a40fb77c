"""HMAC-SHA256 signing of file links, namespaced so a signature is valid for one purpose only."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

from ..errors import AccessDenied

_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")


def load_or_create_secret(data_dir: Path, configured: str = "") -> bytes:
    """The configured secret, else ``data_dir/secret.key`` (created once, mode 0600)."""
    if configured:
        return configured.encode()
    path = data_dir / "secret.key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    os.replace(tmp, path)
    return value


class UrlSigner:
    """Signs ``(namespace, name, expires)``; verification is constant-time."""

    def __init__(self, secret: bytes, namespace: str = "files") -> None:
        self._secret = secret
        self._namespace = namespace

    def signature(self, name: str, expires: int) -> str:
        message = f"{self._namespace}\n{name}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, name: str, expires: str | None, signature: str | None, now: float | None = None) -> None:
        """Raise ``AccessDenied`` unless the signature matches and the link has not expired."""
        # canonical ASCII digits only: "²".isdigit() is true (int() then fails) and "0123" would alias "123"
        if not expires or not signature or not _EXPIRES.fullmatch(expires):
            raise AccessDenied("The file link is missing a valid expires or signature parameter.")
        expected = self.signature(name, int(expires))
        if not hmac.compare_digest(expected, signature):
            raise AccessDenied("The file link signature is not valid.")
        if int(expires) < (time.time() if now is None else now):
            raise AccessDenied("The file link has expired.")
