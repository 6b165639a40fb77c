"""The usage ledger: one row per generation request, its lifecycle, crash recovery, and the summaries.

A job's row is opened when the job is admitted (status ``running``), updated as images are delivered and
closed with its final status (``ok``, an error code, or ``cancelled``). Refusals are written in one go
(:meth:`LedgerStore.record_usage`). Each row names the process that wrote it (:class:`Owner`: host name,
pid and a random id per process), so that at start the rows a crashed process left ``running`` become
``interrupted``, keeping the images counted so far (:meth:`LedgerStore.recover_interrupted`).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Select

from .keys import AccountError
from .schema import IPM_RESERVATIONS, USAGE, Database, aware, naive_utc, utcnow

NO_KEY = "-"  # the ledger's key name when authentication is off
RUNNING = "running"  # a job's row from admission until it ends
INTERRUPTED = "interrupted"  # a running row whose process died
_INSTANCE = [secrets.token_hex(8)]  # this process's incarnation: tells our rows from a dead process with our pid


def _new_instance() -> None:
    _INSTANCE[0] = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_instance)  # a forked worker is a process of its own


@dataclass(frozen=True)
class UsageRecord:
    """One ledger row: a generation request."""

    key_name: str
    model: str
    images: int
    tokens: int
    status: str  # "running", "ok", an error code, "cancelled" or "interrupted"
    duration_ms: int
    request_id: str
    ts: datetime | None = None  # default: when written
    upstream_request_id: str | None = None  # the request id an upstream engine gave (ark, openai)


@dataclass(frozen=True)
class UsageSummary:
    """Requests of one key on one model, summed. Interrupted requests count as errors, with their images."""

    key_name: str
    model: str
    requests: int
    images: int
    tokens: int
    errors: int
    cancelled: int


@dataclass(frozen=True)
class Owner:
    """The process that writes ledger rows: host name, pid and a random id of this incarnation."""

    host: str
    pid: int
    instance: str

    @classmethod
    def current(cls) -> Owner:
        return cls(socket.gethostname()[:255], os.getpid(), _INSTANCE[0])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _usage_filter(query: Select[Any], since: datetime | None, key_name: str | None) -> Select[Any]:
    """Restrict a usage query to rows since a time and/or of one key."""
    if since is not None:
        query = query.where(USAGE.c.ts >= naive_utc(since))
    if key_name is not None:
        query = query.where(USAGE.c.key_name == key_name)
    return query


class LedgerStore(Database):
    """The ``usage`` table. Every method is one short transaction; rows are owned by :attr:`owner`."""

    fixed_owner: Owner | None = None

    @property
    def owner(self) -> Owner:
        """The process its rows name: :attr:`fixed_owner` when set (tests play other processes), else this one."""
        return self.fixed_owner or Owner.current()

    def _row(self, record: UsageRecord, now: datetime) -> dict[str, Any]:
        return {
            "ts": naive_utc(record.ts) if record.ts is not None else now,
            "key_name": record.key_name[:64],
            "model": record.model[:200],
            "images": record.images,
            "tokens": record.tokens,
            "status": record.status[:64],
            "duration_ms": record.duration_ms,
            "request_id": record.request_id[:64],
            "host": self.owner.host,
            "pid": self.owner.pid,
            "instance": self.owner.instance,
        }

    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        """Write finished rows (refusals, or anything that never ran)."""
        if not records:
            return
        now = utcnow()
        with self.writing() as conn:
            conn.execute(insert(USAGE), [self._row(r, now) for r in records])

    def open_entry(self, record: UsageRecord) -> None:
        """Write a job's row with status ``running``; committed when this returns."""
        row = self._row(record, utcnow()) | {"status": RUNNING}
        try:
            with self.writing() as conn:
                conn.execute(insert(USAGE).values(**row))
        except IntegrityError as exc:
            raise AccountError(f"request {record.request_id!r} already has a running ledger row") from exc

    def update_entry(self, request_id: str, images: int, tokens: int, duration_ms: int | None = None) -> None:
        """Count the images and tokens a running job has delivered so far."""
        values: dict[str, int] = {"images": images, "tokens": tokens}
        if duration_ms is not None:
            values["duration_ms"] = duration_ms
        self._update_running(request_id, values)

    def close_entry(
        self,
        request_id: str,
        *,
        images: int,
        tokens: int,
        status: str,
        duration_ms: int,
        upstream_request_id: str | None = None,
    ) -> None:
        """End a running job's row with its final counts and status."""
        if status == RUNNING:
            raise AccountError("a ledger row is closed with a final status, not 'running'")
        values: dict[str, Any] = {"images": images, "tokens": tokens, "status": status[:64], "duration_ms": duration_ms}
        if upstream_request_id is not None:
            values["upstream_request_id"] = upstream_request_id[:128]
        self._update_running(request_id, values)

    def _update_running(self, request_id: str, values: dict[str, Any]) -> None:
        query = update(USAGE).where(USAGE.c.request_id == request_id[:64], USAGE.c.status == RUNNING)
        with self.writing() as conn:
            if conn.execute(query.values(**values)).rowcount == 0:
                raise AccountError(f"request {request_id!r} has no running ledger row")

    def recover_interrupted(self, alive: Callable[[int], bool] = pid_alive) -> int:
        """Mark ``interrupted`` the running rows of dead processes on this host; returns how many.

        A row is orphaned when its process is gone, or when it carries our pid but another incarnation's id
        (a restarted server that got its old pid back). Rows of other hosts are left alone: only their own
        host can tell whether their process lives (shared databases get heartbeats in the scale-out issue).
        """
        me = self.owner
        with self.writing() as conn:
            rows = conn.execute(
                select(USAGE.c.id, USAGE.c.pid, USAGE.c.instance).where(
                    USAGE.c.status == RUNNING, USAGE.c.host == me.host
                )
            ).all()
            orphaned = [
                row.id
                for row in rows
                if row.pid is None or (row.instance != me.instance if row.pid == me.pid else not alive(int(row.pid)))
            ]
            if orphaned:
                conn.execute(update(USAGE).where(USAGE.c.id.in_(orphaned)).values(status=INTERRUPTED))
                # their images-per-minute reservations keep only the images the rows counted
                counted = (
                    select(USAGE.c.images)
                    .where(USAGE.c.request_id == IPM_RESERVATIONS.c.request_id, USAGE.c.id.in_(orphaned))
                    .scalar_subquery()
                )
                interrupted = select(USAGE.c.request_id).where(USAGE.c.id.in_(orphaned))
                conn.execute(
                    update(IPM_RESERVATIONS)
                    .where(IPM_RESERVATIONS.c.request_id.in_(interrupted))
                    .values(
                        images=func.least(IPM_RESERVATIONS.c.images, counted)
                        if self.dialect == "postgresql"
                        else func.min(IPM_RESERVATIONS.c.images, counted)
                    )
                )
        return len(orphaned)

    def usage_records(self, since: datetime | None = None, key_name: str | None = None) -> list[UsageRecord]:
        query = select(USAGE).order_by(USAGE.c.id)
        query = _usage_filter(query, since, key_name)
        with self.engine.connect() as conn:
            return [
                UsageRecord(
                    key_name=row.key_name,
                    model=row.model,
                    images=int(row.images),
                    tokens=int(row.tokens),
                    status=row.status,
                    duration_ms=int(row.duration_ms),
                    request_id=row.request_id,
                    ts=aware(row.ts),
                    upstream_request_id=row.upstream_request_id,
                )
                for row in conn.execute(query)
            ]

    def usage_summary(self, since: datetime | None = None, key_name: str | None = None) -> list[UsageSummary]:
        """Requests, images, tokens, errors and cancellations per key and model.

        Every row counts its images, running and interrupted ones included; an interrupted request is an
        error, a running one is not (yet).
        """
        failed = USAGE.c.status.notin_(["ok", "cancelled", RUNNING])
        query = (
            select(
                USAGE.c.key_name,
                USAGE.c.model,
                func.count().label("requests"),
                func.coalesce(func.sum(USAGE.c.images), 0).label("images"),
                func.coalesce(func.sum(USAGE.c.tokens), 0).label("tokens"),
                func.coalesce(func.sum(case((failed, 1), else_=0)), 0).label("errors"),
                func.coalesce(func.sum(case((USAGE.c.status == "cancelled", 1), else_=0)), 0).label("cancelled"),
            )
            .group_by(USAGE.c.key_name, USAGE.c.model)
            .order_by(USAGE.c.key_name, USAGE.c.model)
        )
        query = _usage_filter(query, since, key_name)
        with self.engine.connect() as conn:
            return [
                UsageSummary(
                    key_name=row.key_name,
                    model=row.model,
                    requests=int(row.requests),
                    images=int(row.images),
                    tokens=int(row.tokens),
                    errors=int(row.errors),
                    cancelled=int(row.cancelled),
                )
                for row in conn.execute(query)
            ]
