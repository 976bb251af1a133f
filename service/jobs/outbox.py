"""The outbox: every write to the ``outbox`` table, in one place.

A message is written in the same transaction as the state it announces (a new job's tasks, a retry, a
re-drive, a reconciled task), so it exists if and only if that state committed. What takes messages out
is a broker: the RabbitMQ relay reserves due rows in a short transaction (``take_due`` + ``reserve``),
publishes them with no transaction open and then marks them sent (``end_reservation``); the embedded
broker takes them straight from the table and marks them sent in one transaction, in place of a queue.
Several takers may run at once: each takes its turn in ``take_due``, so each row goes to one, and a
reserved row is not due again until its reservation expires (its relay died before marking it sent).

Times are the database's (``service.jobs.clock.db_now``), bound as values rather than defaulted in SQL:
SQLite's CURRENT_TIMESTAMP has another text form than bound datetimes, and rows are compared with bound
times.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Subquery,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, aliased

from service.db.models import ChunkTask, ElectionJob, Outbox, TaskState
from service.db.session import is_postgres, rowcount
from service.jobs.clock import db_now

# The key of the advisory lock under which takers take their turns ("amarvote" in ASCII).
TAKE_DUE_LOCK = 0x616D6172766F7465


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


def _waiting(row: type[Outbox], now: Any) -> ColumnElement[bool]:
    """Unsent and not reserved by a live relay (never reserved, or its reservation has expired)."""
    return and_(row.sent_at.is_(None), or_(row.reserved_until.is_(None), row.reserved_until <= now))


def in_flight(job_ids: Any, now: datetime | None = None) -> Subquery:
    """Per job (among ``job_ids``, a select of ids): its tasks whose message has gone out and not come
    back, i.e. being published, queued in the broker or running: PENDING or RUNNING, a message sent or
    reserved by a relay (until ``now``, the database's time) and none waiting.

    A task with a waiting row is not counted: that row is a retry waiting for its backoff, a requeue or
    the reconciler's republish of a task whose bridge died, and it must get a slot of its own (counting
    it would let W dead tasks hold their job's window shut for ever). Without ``now`` the statement's own
    time is used (PostgreSQL; SQLite compares bound times only, see the module's note)."""
    at: Any = now if now is not None else func.now()
    out = aliased(Outbox)
    waiting = aliased(Outbox)
    return (
        select(ChunkTask.job_id, func.count().label("n"))
        .where(
            ChunkTask.job_id.in_(job_ids),
            ChunkTask.state.in_([TaskState.PENDING.value, TaskState.RUNNING.value]),
            exists().where(
                out.task_id == ChunkTask.id, or_(out.sent_at.is_not(None), out.reserved_until > at)
            ),
            ~exists().where(waiting.task_id == ChunkTask.id, _waiting(waiting, at)),
        )
        .group_by(ChunkTask.job_id)
        .subquery("in_flight")
    )


def take_due(
    session: Session, limit: int, *, operations: list[str] | None = None, window: int | None = None
) -> list[Outbox]:
    """Up to ``limit`` unsent, unreserved rows whose time has come, locked for this transaction, in
    fair-share order. The caller marks them sent (:func:`mark_sent`) or reserves them (:func:`reserve`)
    before it commits, in the same short transaction: nothing slow may run while it is open.

    Fair share across jobs: rows are taken round-robin over the jobs that have due rows (a job of
    priority p gets p + 1 rows per round, and the higher priority goes first within a round; within a
    job, oldest first), and with a ``window`` a job has at most ``window * (p + 1)`` tasks in flight
    (:func:`in_flight`, reserved rows included): its other rows wait here, unsent, until its chunks end.
    So a small job submitted behind a million-ballot one waits for at most a window of the big one's
    chunks, and the broker's queues hold at most the window times the active jobs. The state is the
    table itself: it survives any process. Concurrent takers (several relays, embedded brokers) take
    their turns (a transaction-level advisory lock on PostgreSQL, held to the taker's commit, which
    follows at once: a relay publishes only after it), so each counts what the others took or reserved
    and the window is exact.

    The ranking uses a window function, which ``FOR UPDATE`` does not allow in the same statement:
    the ranked ids are chosen first, then locked (``SKIP LOCKED`` on PostgreSQL; SQLite ignores it and
    serialises writers), re-checking that they are still unsent.
    """
    if is_postgres(session):
        # Takers (relays, embedded brokers) take their turns, until each one's commit: each then counts
        # what the others took, so the window holds exactly, and none ranks the same rows only to find
        # them locked (a taker that skipped them would come back empty-handed while rows wait).
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": TAKE_DUE_LOCK})
    now = db_now(session)
    due = [_waiting(Outbox, now), Outbox.available_at <= now]
    if operations is not None:
        due.append(Outbox.operation.in_(operations))
    rank = func.row_number().over(partition_by=Outbox.job_id, order_by=(Outbox.available_at, Outbox.id))
    ranked = select(Outbox.id, Outbox.job_id, rank.label("rn")).where(*due).subquery("ranked")
    weight = func.coalesce(ElectionJob.priority, 0) + 1
    stmt = select(ranked.c.id).outerjoin(ElectionJob, ElectionJob.job_id == ranked.c.job_id)
    if window is not None:
        flying = in_flight(select(ranked.c.job_id).distinct(), now)
        stmt = stmt.outerjoin(flying, flying.c.job_id == ranked.c.job_id).where(
            ranked.c.rn <= window * weight - func.coalesce(flying.c.n, 0)
        )
    stmt = stmt.order_by(
        (ranked.c.rn - 1) // weight,  # the round
        weight.desc(),
        ElectionJob.created_at,
        ranked.c.job_id,
        ranked.c.rn,
    ).limit(limit)
    ids = list(session.scalars(stmt))
    if not ids:
        return []
    order = {row_id: i for i, row_id in enumerate(ids)}
    rows = session.scalars(
        select(Outbox).where(Outbox.id.in_(ids), _waiting(Outbox, now)).with_for_update(skip_locked=True)
    )
    return sorted(rows, key=lambda r: order[r.id])


def message_of(row: Outbox) -> Message:
    return Message(row.id, row.operation, row.job_id, row.task_id)


def mark_sent(session: Session, rows: list[Outbox]) -> None:
    now = db_now(session)
    for row in rows:
        row.sent_at = now


def reserve(session: Session, rows: list[Outbox], lease: timedelta) -> str:
    """Reserve rows just taken (:func:`take_due`) for a publish after this transaction commits: none is
    due again for ``lease``, and they count in their jobs' windows meanwhile. Returns the reservation's
    token for :func:`end_reservation`."""
    token = uuid.uuid4().hex
    until = db_now(session) + lease
    if rows:  # one statement for the batch (the loaded rows are updated in the session too)
        session.execute(
            update(Outbox)
            .where(Outbox.id.in_([r.id for r in rows]))
            .values(reserved_until=until, reserved_by=token)
        )
    return token


def end_reservation(
    session: Session,
    token: str,
    reserved: Sequence[int],
    sent: Sequence[int],
    refused: Sequence[int],
    refused_delay: timedelta,
) -> None:
    """After the publish of the ``reserved`` rows: the ``sent`` ones (confirmed) are marked sent, the
    ``refused`` ones (queue full, unroutable) are kept unsent and due again after ``refused_delay``, and
    the rest (no confirm came: the connection dropped) are due again at once.

    A confirmed row is marked sent even if its reservation expired meanwhile (it went out); a row is
    released only while this token still holds it, never another relay's later reservation of it."""
    now = db_now(session)
    if sent:
        session.execute(
            update(Outbox).where(Outbox.id.in_(sent), Outbox.sent_at.is_(None)).values(sent_at=now)
        )
    mine = [Outbox.reserved_by == token, Outbox.sent_at.is_(None)]
    released = {"reserved_until": None, "reserved_by": None}
    if refused:
        session.execute(
            update(Outbox)
            .where(Outbox.id.in_(refused), *mine)
            .values(available_at=now + refused_delay, **released)
        )
    rest = sorted(set(reserved) - set(sent) - set(refused))
    if rest:
        session.execute(update(Outbox).where(Outbox.id.in_(rest), *mine).values(**released))


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
