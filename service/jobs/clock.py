"""The time the job tables are written and compared with: the database's own clock.

Leases, retry backoff, outbox availability and escrow retention are compared across hosts: a bridge on
one machine takes a lease, a relay on another publishes a retry, a third reconciles. With each host's own
clock, a skew between them makes a retry arrive "early" (acked and dropped) or a live lease look expired.
So every transition reads the time from PostgreSQL (``now()``, the start of its transaction). SQLite is
the embedded default on one machine: there the machine's clock is the only one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.session import is_postgres

MAX_BACKOFF_SECONDS = 3600.0


def utcnow() -> datetime:
    """This machine's time, for what is not compared across hosts (durations measured here, logs)."""
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (we always store UTC); PostgreSQL returns aware ones."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)


def db_now(session: Session) -> datetime:
    """The database's current time (timezone-aware UTC)."""
    if is_postgres(session):
        value = aware(session.scalar(select(func.now())))
        assert value is not None
        return value.astimezone(UTC)
    return utcnow()


def backoff(base_seconds: float, attempts: int) -> timedelta:
    """The wait before the next attempt after ``attempts`` of them: 1x, 2x, 4x ... the base, capped at an
    hour (a chunk task's retry and a callback's alike)."""
    return timedelta(seconds=min(base_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))
