"""HMAC-SHA256 signing of file links, namespaced so a signature is valid for one purpose only."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from pathlib import Path

from ..errors import AccessDenied

_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")  # what hexdigest() gives; anything else is refused unread
MIN_SECRET_BYTES = 32


def load_or_create_secret(data_dir: Path, configured: str = "") -> bytes:
    """The configured secret, else ``data_dir/secret.key`` (created once, mode 0600).

    Safe when several processes start on a fresh data directory at once: each writes its candidate to
    a temporary file of its own and hard-links it into place, so exactly one wins and every process
    returns what the file holds. Raises ``ValueError`` for a secret shorter than 32 bytes.
    """
    if configured:
        return _checked(configured.encode(), "the configured signing_secret")
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".secret-", suffix=".tmp", dir=data_dir)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_hex(32).encode())
                fh.flush()
                os.fsync(fh.fileno())
            # atomic, and never replaces a file another process created first; if one did, use its secret
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return _checked(path.read_bytes().strip(), str(path))


def _checked(secret: bytes, where: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{where} is {len(secret)} bytes; a signing secret needs at least {MIN_SECRET_BYTES} "
            "(delete an empty or truncated secret.key to have a new one generated)"
        )
    return secret


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
        # lowercase hex only: compare_digest raises TypeError for non-ASCII str
        if not _SIGNATURE.fullmatch(signature):
            raise AccessDenied("The file link signature is not valid.")
        expected = self.signature(name, int(expires))
        if not hmac.compare_digest(expected, signature):
            raise AccessDenied("The file link signature is not valid.")
        if int(expires) < (time.time() if now is None else now):
            raise AccessDenied("The file link has expired.")
