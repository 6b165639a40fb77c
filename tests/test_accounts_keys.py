"""API keys: creation, authentication, revocation, storage of the hash only, bearer parsing (``accounts/keys.py``).

Against a real SQLite file in a temp dir, and against PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from sqlalchemy import select

import accounts_support
from seedream_server.accounts import (
    API_KEYS,
    DEFAULT_IPM,
    KEY_NAME_PATTERN,
    AccountError,
    AccountStore,
    hash_key,
    parse_bearer,
)
from seedream_server.errors import AuthenticationError

database_url = accounts_support.database_url
store = accounts_support.store

KEY_RE = re.compile(r"^sk-[A-Za-z0-9_-]{43}$")


def test_create_authenticate_list_revoke(store: AccountStore) -> None:
    key, secret = store.create_key("alice", ipm=20, models=["seedream-4.0", " ", "seedream-4.0", "b"])
    assert KEY_RE.match(secret)
    assert (key.name, key.ipm, key.models, key.prefix) == ("alice", 20, ("seedream-4.0", "b"), secret[:8])
    assert store.authenticate(secret) == key
    assert store.authenticate(secret + "x") is None
    assert store.authenticate("sk-" + "A" * 43) is None
    other, other_secret = store.create_key("bob")
    assert other.ipm == DEFAULT_IPM and other.models == ()
    assert other_secret != secret
    assert [k.name for k in store.list_keys()] == ["alice", "bob"]

    revoked = store.revoke_key("alice")
    assert revoked.revoked and revoked.revoked_at is not None
    assert store.authenticate(secret) is None
    assert store.authenticate(other_secret) == other
    with pytest.raises(AccountError, match="already revoked"):
        store.revoke_key("alice")
    with pytest.raises(AccountError, match="no key named"):
        store.revoke_key("carol")


def test_names_are_unique_and_checked(store: AccountStore) -> None:
    store.create_key("alice")
    with pytest.raises(AccountError, match="already exists"):
        store.create_key("alice")
    for bad in ("", "-x", "has space", "x" * 65, "ünï"):
        assert not KEY_NAME_PATTERN.match(bad)
        with pytest.raises(AccountError, match="invalid key name"):
            store.create_key(bad)
    with pytest.raises(AccountError, match="at least 1"):
        store.create_key("zero", ipm=0)


def test_only_the_hash_is_stored(store: AccountStore) -> None:
    _, secret = store.create_key("alice")
    with store.engine.connect() as conn:
        row = conn.execute(select(API_KEYS)).one()
    stored = [str(value) for value in row]
    assert secret not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    assert not any(secret[8:] in value for value in stored)  # beyond the listed prefix, nothing in clear


def test_sqlite_file_bytes_never_hold_a_key(tmp_path: Path) -> None:
    store = AccountStore.open(tmp_path / "data")
    secrets_ = [store.create_key(f"k{i}")[1] for i in range(5)]
    store.authenticate(secrets_[0])
    store.close()
    files = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("seedream.db")]
    blob = b"".join(p.read_bytes() for p in files)
    assert hash_key(secrets_[0]).encode() in blob
    for secret in secrets_:
        assert secret.encode() not in blob
        assert secret[8:].encode() not in blob


def test_bearer_parsing() -> None:
    assert parse_bearer("Bearer sk-abc") == "sk-abc"
    assert parse_bearer("bearer   sk-abc  ") == "sk-abc"
    for header in (None, "", "  "):
        with pytest.raises(AuthenticationError, match="no API key"):
            parse_bearer(header)
    for header in ("Bearer", "Bearer  ", "Basic x", "sk-abc", "Bearer a b", "Bearer " + "x" * 300):
        with pytest.raises(AuthenticationError, match="malformed"):
            parse_bearer(header)
