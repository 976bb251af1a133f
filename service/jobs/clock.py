"""The time the job tables are written and compared with: the database's own clock.

Leases, retry backoff, outbox availability and escrow retention are compared across hosts: a bridge on
one machine takes a lease, a relay on another publishes a retry, a third reconciles. With each host's own
clock, a skew between them makes a retry arrive "early" (acked and dropped) or a live lease look expired.
So every transition reads the time from PostgreSQL (``now()``, the start of its transaction). SQLite is
the embedded default on one machine: there the machine's clock is the only one.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session


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
    if session.get_bind().dialect.name == "postgresql":
        value = aware(session.scalar(select(func.now())))
        assert value is not None
        return value.astimezone(UTC)
    return utcnow()
