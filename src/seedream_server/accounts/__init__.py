"""Keys, per-key limits and the usage ledger (SPEC §11), in a SQL database through SQLAlchemy.

The database is the SQLite file ``DATA_DIR/seedream.db`` unless a URL names another (PostgreSQL through
psycopg). One module per part:

* :mod:`.schema` -- the tables and their migrations; :class:`~.schema.Database`, the connection rules;
* :mod:`.keys` -- key generation and hashing, ``Authorization: Bearer`` parsing, the ``api_keys`` table;
* :mod:`.limiter` -- the images-per-minute limit, a sliding window per key kept in the database;
* :mod:`.ledger` -- usage rows from admission to their end, crash recovery, the summaries;
* :mod:`.throttle` -- failed authentications per client address (429 past a limit);
* :mod:`.store` -- :class:`AccountStore`, the synchronous store (keys and ledger) the CLI uses;
* :mod:`.facade` -- :class:`Accounts`, the async facade the server uses, and its :class:`Reservation`.
"""

from __future__ import annotations

from .facade import DEFAULT_AUTH_FAILURE_LIMIT, Accounts, Reservation
from .keys import (
    DEFAULT_IPM,
    KEY_NAME_PATTERN,
    KEY_PREFIX,
    PREFIX_CHARS,
    AccountError,
    ApiKey,
    KeyStore,
    generate_key,
    hash_key,
    parse_bearer,
)
from .ledger import INTERRUPTED, NO_KEY, RUNNING, LedgerStore, Owner, UsageRecord, UsageSummary, pid_alive
from .limiter import WINDOW_S, IpmLimiter
from .schema import (
    API_KEYS,
    IPM_RESERVATIONS,
    METADATA,
    MIGRATIONS,
    SCHEMA_LATEST,
    SCHEMA_VERSION,
    USAGE,
    Database,
    Migration,
    redact_url,
    resolve_database_url,
)
from .store import AccountStore
from .throttle import AuthThrottle

__all__ = [
    "API_KEYS",
    "DEFAULT_AUTH_FAILURE_LIMIT",
    "DEFAULT_IPM",
    "INTERRUPTED",
    "IPM_RESERVATIONS",
    "KEY_NAME_PATTERN",
    "KEY_PREFIX",
    "METADATA",
    "MIGRATIONS",
    "NO_KEY",
    "PREFIX_CHARS",
    "RUNNING",
    "SCHEMA_LATEST",
    "SCHEMA_VERSION",
    "USAGE",
    "WINDOW_S",
    "AccountError",
    "AccountStore",
    "Accounts",
    "ApiKey",
    "AuthThrottle",
    "Database",
    "IpmLimiter",
    "KeyStore",
    "LedgerStore",
    "Migration",
    "Owner",
    "Reservation",
    "UsageRecord",
    "UsageSummary",
    "generate_key",
    "hash_key",
    "parse_bearer",
    "pid_alive",
    "redact_url",
    "resolve_database_url",
]
