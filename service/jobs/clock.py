"""The time the job tables are written with: timezone-aware UTC, the same on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (we always store UTC); PostgreSQL returns aware ones."""
    if dt is None or dt.tzinfo is not None:
        return dt
    return dt.replace(tzinfo=UTC)
