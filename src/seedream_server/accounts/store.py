"""The synchronous store: keys and the usage ledger over one database, for the server and the CLI."""

from __future__ import annotations

from pathlib import Path

from .keys import KeyStore
from .ledger import LedgerStore, Owner
from .schema import resolve_database_url


class AccountStore(KeyStore, LedgerStore):
    """Keys and the usage ledger in one database. Every method is one short transaction.

    ``owner`` is the process its ledger rows name (default: this one); tests pass another to play a
    second process.
    """

    def __init__(self, url: str, owner: Owner | None = None) -> None:
        super().__init__(url)
        self.fixed_owner = owner

    @classmethod
    def open(cls, data_dir: str | Path, database_url: str = "", owner: Owner | None = None) -> AccountStore:
        """The store for these settings, migrated to the latest schema."""
        store = cls(resolve_database_url(data_dir, database_url), owner)
        store.migrate()
        return store
