"""The outbox: every write to the ``outbox`` table, in one place.

A message is written in the same transaction as the state it announces (a new job's tasks, a retry, a
re-drive, a reconciled task), so it exists if and only if that state committed. What takes messages out
is a broker: the RabbitMQ relay publishes due rows and marks them sent (``take_due`` + ``mark_sent``),
the embedded broker takes them straight from the table in place of a queue. Several takers may run at
once: ``take_due`` locks with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so each row goes to one.

Times are the database's (``service.jobs.clock.db_now``), bound as values rather than defaulted in SQL:
SQLite's CURRENT_TIMESTAMP has another text form than bound datetimes, and rows are compared with bound
times.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, DateTime, delete, exists, func, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from service.db.models import ChunkTask, ElectionJob, Outbox
from service.db.session import rowcount
from service.jobs.clock import db_now


@dataclass(frozen=True, slots=True)
class Message:
    """What one outbox row announces: ids only."""

    id: int
    operation: str
    job_id: uuid.UUID
    task_id: int


def enqueue(
    session: Session, task_id: int, job_id: uuid.UUID, operation: str, available_at: datetime | None = None
) -> None:
    """One message for a chunk task, available now or at ``available_at`` (a retry's backoff)."""
    now = db_now(session)
    session.add(
        Outbox(
            operation=str(operation),
            job_id=job_id,
            task_id=task_id,
            created_at=now,
            available_at=available_at or now,
        )
    )


def enqueue_job_tasks(session: Session, job: ElectionJob) -> None:
    """One message per task of ``job``, set-based (INSERT ... SELECT): a job of 100,000 chunks costs as
    much as the database takes to write the rows, not 100,000 round trips."""
    now = literal(db_now(session), DateTime(timezone=True))
    session.execute(
        insert(Outbox).from_select(
            ["operation", "job_id", "task_id", "created_at", "available_at"],
            select(literal(job.operation_type), ChunkTask.job_id, ChunkTask.id, now, now)
            .where(ChunkTask.job_id == job.job_id)
            .order_by(ChunkTask.id),
        )
    )


def take_due(session: Session, limit: int, *, operations: list[str] | None = None) -> list[Outbox]:
    """Up to ``limit`` unsent rows whose time has come, oldest first, locked for this transaction."""
    stmt = select(Outbox).where(Outbox.sent_at.is_(None), Outbox.available_at <= db_now(session))
    if operations is not None:
        stmt = stmt.where(Outbox.operation.in_(operations))
    stmt = stmt.order_by(Outbox.available_at, Outbox.id).limit(limit).with_for_update(skip_locked=True)
    return list(session.scalars(stmt))


def message_of(row: Outbox) -> Message:
    return Message(row.id, row.operation, row.job_id, row.task_id)


def mark_sent(session: Session, rows: list[Outbox]) -> None:
    now = db_now(session)
    for row in rows:
        row.sent_at = now


def defer(session: Session, rows: list[Outbox], delay: timedelta) -> None:
    """Keep rows unsent and try them again after ``delay`` (the broker refused them: queue full)."""
    later = db_now(session) + delay
    for row in rows:
        row.available_at = later


def unsent(session: Session) -> int:
    """Rows not yet taken, those waiting for a retry's backoff included."""
    return int(session.scalar(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))) or 0)


def prune(session: Session, keep_sent: timedelta) -> int:
    """Delete rows sent longer than ``keep_sent`` ago (the reconciler looks only at recent ones)."""
    cutoff = db_now(session) - keep_sent
    return rowcount(session.execute(delete(Outbox).where(Outbox.sent_at < cutoff)))


def has_recent_message(recent: datetime) -> ColumnElement[bool]:
    """For a query over chunk tasks: the task has an unsent message, or one sent or written since
    ``recent`` (it may still sit in a queue). Uses the ``task_id`` index."""
    return exists().where(
        Outbox.task_id == ChunkTask.id,
        or_(Outbox.sent_at.is_(None), Outbox.sent_at > recent, Outbox.created_at > recent),
    )


def release_taken(session: Session, ids: list[int]) -> None:
    """Put rows back as unsent (a broker that took them will not deliver them after all)."""
    if ids:
        session.execute(update(Outbox).where(Outbox.id.in_(ids)).values(sent_at=None))
