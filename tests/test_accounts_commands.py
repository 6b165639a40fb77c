"""The ``keys`` and ``usage`` commands over the key store and ledger (``cli.py`` on ``accounts/``).

Against a real SQLite file in a temp dir, and against PostgreSQL when ``SEEDREAM_TEST_DATABASE_URL`` is set.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

import accounts_support
from seedream_server.accounts import AccountStore, UsageRecord
from seedream_server.cli import main, parse_since

database_url = accounts_support.database_url

KEY_RE = re.compile(r"^sk-[A-Za-z0-9_-]{43}$")


def cli(tmp_path: Path, database_url: str, *args: str) -> tuple[int, str, str]:
    """Run ``seedream ARGS --data-dir D [--database-url U]`` in process; (exit code, stdout, stderr)."""
    extra = ["--data-dir", str(tmp_path / "data")] + (["--database-url", database_url] if database_url else [])
    result = CliRunner().invoke(main, [*args, *extra], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_keys_commands(tmp_path: Path, database_url: str) -> None:
    code, out, err = cli(tmp_path, database_url, "keys", "create", "--name", "alice", "--ipm", "20", "--models", "a,b")
    assert code == 0, err
    secret = out.strip().splitlines()[-1]
    assert KEY_RE.match(secret)
    assert "alice" in err and "shown once" in err
    assert "warning: not served with this configuration: a, b" in err  # created all the same

    code, out, _ = cli(tmp_path, database_url, "keys", "create", "--name", "bob")
    bob = out.strip().splitlines()[-1]
    assert code == 0 and KEY_RE.match(bob)
    code, _, err = cli(tmp_path, database_url, "keys", "create", "--name", "alice")
    assert code == 1 and "already exists" in err

    code, out, _ = cli(tmp_path, database_url, "keys", "list")
    assert code == 0
    assert "alice" in out and "bob" in out and secret[:8] in out and "a, b" in out and "20" in out
    assert secret not in out and bob not in out and secret[8:14] not in out

    code, out, _ = cli(tmp_path, database_url, "keys", "revoke", "alice")
    assert code == 0 and "Revoked" in out
    code, _, err = cli(tmp_path, database_url, "keys", "revoke", "alice")
    assert code == 1 and "already revoked" in err
    code, _, err = cli(tmp_path, database_url, "keys", "revoke", "nobody")
    assert code == 1 and "no key named" in err

    store = AccountStore.open(tmp_path / "data", database_url)
    assert store.authenticate(secret) is None
    assert getattr(store.authenticate(bob), "name", None) == "bob"
    revoked = {k.name: k.revoked for k in store.list_keys()}
    assert revoked == {"alice": True, "bob": False}
    store.close()


def test_usage_command(tmp_path: Path, database_url: str) -> None:
    store = AccountStore.open(tmp_path / "data", database_url)
    now = datetime.now(UTC)
    store.record_usage(
        [
            UsageRecord("alice", "doubao-seedream-4-0-250828", 4, 65536, "ok", 900, "r1", ts=now),
            UsageRecord("alice", "doubao-seedream-4-0-250828", 0, 0, "ModelAccountIpmRateLimitExceeded", 1, "r2"),
            UsageRecord("bob", "doubao-seedream-4-0-250828", 1, 16384, "ok", 300, "r3", ts=now - timedelta(days=3)),
        ]
    )
    store.close()
    code, out, _ = cli(tmp_path, database_url, "usage")
    assert code == 0
    lines = [line for line in out.splitlines() if "alice" in line or "bob" in line or "total" in line]
    assert len(lines) == 3
    alice = lines[0].replace("│", " ").split()
    assert alice == ["alice", "doubao-seedream-4-0-250828", "2", "4", "65,536", "1", "0"]
    code, out, _ = cli(tmp_path, database_url, "usage", "--since", "24h")
    assert "alice" in out and "bob" not in out and "Usage since" in out
    code, out, _ = cli(tmp_path, database_url, "usage", "--key", "bob", "--since", "2020-01-01")
    assert "bob" in out and "alice" not in out
    code, out, _ = cli(tmp_path, database_url, "usage", "--key", "nobody")
    assert code == 0 and "no requests recorded" in out
    code, _, err = cli(tmp_path, database_url, "usage", "--since", "yesterday")
    assert code == 2 and "expected a duration" in err


def test_usage_and_keys_list_print_markup_in_names_literally(tmp_path: Path, database_url: str) -> None:
    store = AccountStore.open(tmp_path / "data", database_url)
    store.record_usage(
        [
            UsageRecord("alice", "[/evil]", 1, 16384, "ok", 300, "r1"),
            UsageRecord("[bold]mallory[/bold]", "[red]m", 1, 16384, "ok", 300, "r2"),
        ]
    )
    store.create_key("carol", models=["[/evil]", "[link=http://x]y"])
    store.close()
    code, out, _ = cli(tmp_path, database_url, "usage")
    assert code == 0, out
    assert "[/evil]" in out and "[bold]mallory[/bold]" in out and "[red]m" in out
    code, out, _ = cli(tmp_path, database_url, "keys", "list")
    assert code == 0, out
    assert "[/evil], [link=http://x]y" in out


def test_parse_since() -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert parse_since("1h", now) == now - timedelta(hours=1)
    assert parse_since("24h", now) == now - timedelta(days=1)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T08:00:00+08:00", now) == datetime(2026, 11, 1, tzinfo=UTC)
