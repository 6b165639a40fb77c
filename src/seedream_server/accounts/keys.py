"""API keys: generation, hashing, the ``Authorization: Bearer`` header, and the key half of the store.

A key is ``sk-`` + ``secrets.token_urlsafe(32)`` (256 random bits), shown once at creation and stored only
as a SHA-256 hex digest, looked up by digest and compared with ``hmac.compare_digest``. A plain digest
suffices for keys of this entropy, and unlike an HMAC with the server's file-signing secret it lets
``seedream keys create --database-url`` and several server processes share one PostgreSQL database
without sharing ``DATA_DIR/secret.key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from ..errors import AuthenticationError
from .schema import API_KEYS, Database, aware, utcnow

DEFAULT_IPM = 500
"""Images per minute a key may generate unless created with another limit (Ark's default)."""

KEY_PREFIX = "sk-"
PREFIX_CHARS = 8  # the leading characters of a key kept in clear, to tell keys apart in listings
KEY_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_MAX_TOKEN_CHARS = 256


class AccountError(ValueError):
    """A key or ledger operation that cannot be done (duplicate name, unknown key, bad limit, duplicate row)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: int
    name: str
    prefix: str
    ipm: int
    models: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_bearer(authorization: str | None) -> str:
    """The key in an ``Authorization: Bearer <key>`` header, or 401."""
    if authorization is None or not authorization.strip():
        raise AuthenticationError("The request has no API key: send it in the header `Authorization: Bearer <key>`.")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token) or len(token) > _MAX_TOKEN_CHARS:
        raise AuthenticationError("The Authorization header is malformed: expected `Bearer <key>`.")
    return token


def _key_from_row(row: Row[Any]) -> ApiKey:
    created = aware(row.created_at)
    assert created is not None
    return ApiKey(
        id=int(row.id),
        name=str(row.name),
        prefix=str(row.prefix),
        ipm=int(row.ipm),
        models=tuple(json.loads(row.models or "[]")),
        created_at=created,
        revoked_at=aware(row.revoked_at),
    )


class KeyStore(Database):
    """The ``api_keys`` table: create, list, revoke, authenticate. Every method is one short transaction."""

    def create_key(self, name: str, *, ipm: int = DEFAULT_IPM, models: Sequence[str] = ()) -> tuple[ApiKey, str]:
        """Create a key; returns it and its secret, which is not stored and cannot be shown again."""
        if not KEY_NAME_PATTERN.match(name):
            raise AccountError(
                f"invalid key name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-', "
                "starting with a letter or digit"
            )
        if ipm < 1:
            raise AccountError(f"invalid images-per-minute limit {ipm}: must be at least 1")
        listed = tuple(dict.fromkeys(m.strip() for m in models if m.strip()))
        secret = generate_key()
        now = utcnow()
        values = {
            "name": name,
            "key_hash": hash_key(secret),
            "prefix": secret[:PREFIX_CHARS],
            "ipm": ipm,
            "models": json.dumps(list(listed)),
            "created_at": now,
        }
        try:
            with self.writing() as conn:
                key_id = conn.execute(insert(API_KEYS).values(**values).returning(API_KEYS.c.id)).scalar_one()
        except IntegrityError as exc:
            raise AccountError(f"a key named {name!r} already exists (names stay taken after revocation)") from exc
        created = aware(now)
        assert created is not None
        return ApiKey(int(key_id), name, secret[:PREFIX_CHARS], ipm, listed, created), secret

    def list_keys(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            return [_key_from_row(row) for row in conn.execute(select(API_KEYS).order_by(API_KEYS.c.id))]

    def is_empty(self) -> bool:
        with self.engine.connect() as conn:
            return not conn.execute(select(func.count()).select_from(API_KEYS)).scalar()

    def revoke_key(self, name: str) -> ApiKey:
        """Revoke a key by name; its requests get 401 from then on."""
        with self.writing() as conn:
            row = conn.execute(select(API_KEYS).where(API_KEYS.c.name == name)).first()
            if row is None:
                raise AccountError(f"no key named {name!r}")
            if row.revoked_at is not None:
                raise AccountError(f"key {name!r} is already revoked")
            now = utcnow()
            conn.execute(update(API_KEYS).where(API_KEYS.c.id == row.id).values(revoked_at=now))
        return replace(_key_from_row(row), revoked_at=aware(now))

    def authenticate(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None (unknown or revoked)."""
        digest = hash_key(secret)
        with self.engine.connect() as conn:
            row = conn.execute(select(API_KEYS).where(API_KEYS.c.key_hash == digest)).first()
        if row is None or not hmac.compare_digest(str(row.key_hash), digest) or row.revoked_at is not None:
            return None
        return _key_from_row(row)
