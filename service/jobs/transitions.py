"""The chunk-task lifecycle: claim, complete, fail, release, re-drive, and what the reconciler may take back.

Each function works inside the caller's transaction (``with factory.begin() as session:``) and keeps
it short: lock the task row, then its job row (always in that order, so two transitions never
deadlock), change state, return. PostgreSQL is the truth, so these are what make at-least-once
delivery have an exactly-once effect:

- a task's result is written by ``write_result`` in the same transaction that marks it DONE, and
  a task already DONE is never written again: a repeated delivery changes nothing;
- progress counters move only together with a state change of a task;
- the job's last state change (COMPLETED or FAILED) happens under the job's row lock, once, and
  the finalizer (``service.jobs.finalize``) runs in that same transaction, as does the writing of its
  completion callback (``service.jobs.callbacks``).

Every chunk that ends (DONE or FAILED) and every re-drive sets the job's ``last_progress_at``: the
clock of stuck-job detection (``service.jobs.status.is_stuck``).

Attempts are counted here, at claim time, not by the broker or by Ray: a worker that dies mid-chunk
has still used an attempt, which is what stops a chunk that kills its worker from looping forever.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.db.models import ChunkTask, ElectionCenter, ElectionJob, JobStatus, TaskState
from service.db.session import rowcount
from service.jobs import callbacks, outbox
from service.jobs.clock import aware, backoff, db_now
from service.settings import Settings

MAX_ERROR_CHARS = 2000
WriteResult = Callable[[Session, ChunkTask, ElectionJob], None]
Finalizer = Callable[[Session, ElectionJob], None]


class PermanentFailure(Exception):
    """A body's failure that another attempt cannot change: its input itself is wrong (an uploaded share
    whose proof fails). ``fail(permanent=True)`` marks the task FAILED at once instead of retrying it."""


# The job metadata flag of jobs whose shares a guardian uploaded (``service.elections.uploads``): their
# tasks check the staged documents instead of computing shares from an escrowed key.
UPLOADED_SHARES = "uploaded"


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker needs to run one chunk task: ids only."""

    task_id: int
    job_id: uuid.UUID
    chunk_id: int
    election_id: int
    operation: str
    attempt: int
    worker: str
    lease_expires_at: datetime
    # Which body of the operation: "" the usual one, "uploaded" for a job of uploaded shares (the
    # executor looks up "<operation>:<variant>" first).
    variant: str = ""

    @property
    def body_key(self) -> str:
        return f"{self.operation}:{self.variant}" if self.variant else self.operation


class Claimed(enum.StrEnum):
    """What :func:`claim` found (what ``complete`` and ``fail`` did is an :class:`Outcome`)."""

    LEASED = "LEASED"  # the task is the caller's now: run ``ClaimResult.lease``
    NOTHING = "NOTHING"  # DONE or FAILED already, leased elsewhere, backing off, or its job ended
    ABANDONED = "ABANDONED"  # its lease ran out at its last attempt: FAILED now (dead-letter the message)


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status: Claimed
    lease: Claim | None = None  # exactly when LEASED


NOTHING_TO_DO = ClaimResult(Claimed.NOTHING)


class Outcome(enum.StrEnum):
    DONE = "DONE"  # this call moved the task to DONE
    ALREADY_DONE = "ALREADY_DONE"  # a repeated delivery: nothing written, nothing counted
    RETRY = "RETRY"  # back to PENDING with a backoff; a new message is in the outbox
    FAILED = "FAILED"  # attempts exhausted: dead-letter the message
    STALE = "STALE"  # the task is no longer ours (FAILED, or leased by someone else): do nothing


@dataclass(frozen=True, slots=True)
class Policy:
    max_attempts: int = 3
    backoff_seconds: float = 2.0
    lease_seconds: int = 600

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            max_attempts=settings.max_attempts,
            backoff_seconds=settings.retry_backoff_seconds,
            lease_seconds=settings.lease_seconds,
        )

    def backoff(self, attempts: int) -> timedelta:
        return backoff(self.backoff_seconds, attempts)


def _lock_task(session: Session, task_id: int) -> ChunkTask | None:
    return session.execute(
        select(ChunkTask).where(ChunkTask.id == task_id).with_for_update()
    ).scalar_one_or_none()


def _lock_job(session: Session, job_id: uuid.UUID) -> ElectionJob:
    return session.execute(
        select(ElectionJob).where(ElectionJob.job_id == job_id).with_for_update()
    ).scalar_one()


def enqueue(
    session: Session, task: ChunkTask, job: ElectionJob, available_at: datetime | None = None
) -> None:
    """Write the message that will (re)deliver ``task`` (``service.jobs.outbox``): ids only."""
    outbox.enqueue(session, task.id, job.job_id, job.operation_type, available_at)


def claim(session: Session, task_id: int, worker: str, policy: Policy) -> ClaimResult:
    """Lease ``task_id`` to ``worker`` and count the attempt (``Claimed.LEASED``, with the lease), or say
    there is nothing to do (``Claimed.NOTHING``).

    Nothing to do: the task is DONE or FAILED (a duplicate or a late message), it is leased and
    the lease is still live (its holder may finish it; if it died, the lease runs out and the
    reconciler republishes it), or its retry backoff has not passed (an early duplicate: the
    retry's own message is still in the outbox).

    Taking over an expired lease is taking over from a worker that died mid-chunk, which used an
    attempt: at the limit the task is FAILED instead ("its worker died N times") and ``Claimed.ABANDONED``
    is returned (the caller dead-letters the message), so a chunk that kills its worker or node cannot
    be taken over for ever.
    """
    now = db_now(session)
    task = _lock_task(session, task_id)
    if task is None or task.state in (TaskState.DONE, TaskState.FAILED):
        return NOTHING_TO_DO
    if task.state == TaskState.RUNNING:
        # A live lease, even our own: a redelivery (the channel closed under a long chunk) must not
        # start the same chunk twice in one bridge. The running attempt acks or fails it.
        expires = aware(task.lease_expires_at)
        if expires is not None and expires > now:
            return NOTHING_TO_DO
        if task.attempts >= policy.max_attempts:
            _fail_abandoned(session, task, now)
            return ClaimResult(Claimed.ABANDONED)
    if task.state == TaskState.PENDING:
        not_before = aware(task.not_before)
        if not_before is not None and not_before > now:
            return NOTHING_TO_DO
    job = _lock_job(session, task.job_id)
    if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
        return NOTHING_TO_DO  # a terminal job takes no work until an operator re-drives it
    chunk = session.get(ElectionCenter, task.chunk_id)
    assert chunk is not None

    task.state = TaskState.RUNNING
    task.attempts += 1
    task.lease_owner = worker
    task.lease_expires_at = now + timedelta(seconds=policy.lease_seconds)
    task.not_before = None
    if task.started_at is None:
        task.started_at = now
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.IN_PROGRESS
        job.started_at = now
    session.flush()
    lease = Claim(
        task_id=task.id,
        job_id=job.job_id,
        chunk_id=task.chunk_id,
        election_id=job.election_id,
        operation=job.operation_type,
        attempt=task.attempts,
        worker=worker,
        lease_expires_at=task.lease_expires_at,
        variant=str((job.metadata_ or {}).get("shares") or ""),
    )
    return ClaimResult(Claimed.LEASED, lease)


def _fail_abandoned(session: Session, task: ChunkTask, now: datetime) -> Outcome:
    """A RUNNING task whose lease ran out at its last attempt: its worker died every time."""
    job = _lock_job(session, task.job_id)
    previous = (task.last_error or "").splitlines()[0][:300] if task.last_error else None
    task.last_error = (
        f"its worker died {task.attempts} time(s) (the lease expired each time with no result)"
        + (f"; earlier: {previous}" if previous else "")
    )[:MAX_ERROR_CHARS]
    return _mark_failed(session, task, job, now)


def _mark_failed(session: Session, task: ChunkTask, job: ElectionJob, now: datetime) -> Outcome:
    """A task out of attempts: FAILED, counted, its job settled if that was its last open task."""
    task.state = TaskState.FAILED
    task.lease_owner = None
    task.lease_expires_at = None
    task.finished_at = now
    job.failed_chunks += 1
    job.last_progress_at = now
    _settle_job(session, job, None, now)
    session.flush()
    return Outcome.FAILED


def fail_abandoned(session: Session, task_id: int, policy: Policy) -> Outcome | None:
    """For the reconciler: FAIL a RUNNING task whose lease expired at its last attempt; None otherwise."""
    now = db_now(session)
    task = _lock_task(session, task_id)
    if task is None or task.state != TaskState.RUNNING or task.attempts < policy.max_attempts:
        return None
    expires = aware(task.lease_expires_at)
    if expires is not None and expires > now:
        return None
    return _fail_abandoned(session, task, now)


def renew_leases(session: Session, task_ids: Iterable[int], worker: str, policy: Policy) -> int:
    """Extend the leases ``worker`` holds on running tasks (a live bridge keeps its chunks)."""
    ids = list(task_ids)
    if not ids:
        return 0
    result = session.execute(
        update(ChunkTask)
        .where(ChunkTask.id.in_(ids), ChunkTask.lease_owner == worker, ChunkTask.state == TaskState.RUNNING)
        .values(lease_expires_at=db_now(session) + timedelta(seconds=policy.lease_seconds))
    )
    return rowcount(result)


def complete(
    session: Session,
    task_id: int,
    write_result: WriteResult,
    finalize: Finalizer | None = None,
) -> Outcome:
    """Write the task's result, mark it DONE and count it, all in the caller's one transaction.

    Idempotent: a DONE task is left alone (ALREADY_DONE, nothing written). A result that comes
    back for a FAILED task (its lease ran out and another attempt exhausted the limit) is dropped
    (STALE): the operator's re-drive recomputes it. Any worker may complete a PENDING or RUNNING
    task: two workers racing on one chunk compute the same thing, and the first commit wins.
    ``finalize`` (default :func:`service.jobs.finalize.finalize_job`) runs once, when the job's
    last task lands.
    """
    task = _lock_task(session, task_id)
    if task is None:
        return Outcome.STALE
    if task.state == TaskState.DONE:
        return Outcome.ALREADY_DONE
    if task.state == TaskState.FAILED:
        return Outcome.STALE
    job = _lock_job(session, task.job_id)
    write_result(session, task, job)

    now = db_now(session)
    task.state = TaskState.DONE
    task.finished_at = now
    task.lease_owner = None
    task.lease_expires_at = None
    task.not_before = None
    job.processed_chunks += 1
    job.last_progress_at = now
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.IN_PROGRESS
        job.started_at = job.started_at or now
    _settle_job(session, job, finalize, now)
    session.flush()
    return Outcome.DONE


def fail(
    session: Session,
    task_id: int,
    worker: str,
    error: str,
    policy: Policy,
    *,
    permanent: bool = False,
) -> Outcome:
    """Record a failed attempt: PENDING again with a backoff below the limit, FAILED at it (at once for a
    ``permanent`` failure, one no retry can change: see :class:`PermanentFailure`).

    Only the lease holder may fail a task (a late failure from a worker whose lease ran out must
    not undo someone else's run). Below the limit a new outbox row is written whose
    ``available_at`` is the backoff, so the retry is driven by PostgreSQL, not by broker TTLs.
    """
    task = _lock_task(session, task_id)
    if task is None or task.state != TaskState.RUNNING or task.lease_owner != worker:
        return Outcome.STALE  # done, failed, released or taken over meanwhile: not ours to count
    job = _lock_job(session, task.job_id)
    now = db_now(session)
    task.last_error = error[:MAX_ERROR_CHARS]
    task.lease_owner = None
    task.lease_expires_at = None
    if task.attempts < policy.max_attempts and not permanent:
        task.state = TaskState.PENDING
        task.not_before = now + policy.backoff(task.attempts)
        enqueue(session, task, job, available_at=task.not_before)
        session.flush()
        return Outcome.RETRY
    return _mark_failed(session, task, job, now)


def release(session: Session, task_id: int, worker: str) -> bool:
    """Give back a task this worker holds but will not finish (shutdown): PENDING, attempt uncounted."""
    task = _lock_task(session, task_id)
    if task is None or task.state != TaskState.RUNNING or task.lease_owner != worker:
        return False
    task.state = TaskState.PENDING
    task.attempts = max(task.attempts - 1, 0)
    task.lease_owner = None
    task.lease_expires_at = None
    session.flush()
    return True


def redrive_failed(session: Session, job_id: uuid.UUID, chunk_ids: Iterable[int] | None = None) -> int:
    """Operator re-drive: the job's FAILED tasks (those on ``chunk_ids`` only, when given) go back to
    PENDING with fresh attempts.

    Moves the counters with the states (failed_chunks down), puts the job back IN_PROGRESS and
    writes one outbox row per task. Returns how many tasks were re-driven.
    """
    which = [ChunkTask.job_id == job_id, ChunkTask.state == TaskState.FAILED]
    if chunk_ids is not None:
        which.append(ChunkTask.chunk_id.in_(list(chunk_ids)))
    tasks = list(
        session.execute(select(ChunkTask).where(*which).order_by(ChunkTask.id).with_for_update()).scalars()
    )
    job = _lock_job(session, job_id)
    if not tasks:
        return 0
    for task in tasks:
        task.state = TaskState.PENDING
        task.attempts = 0
        task.not_before = None
        task.finished_at = None
        enqueue(session, task, job)
    job.failed_chunks -= len(tasks)
    job.status = JobStatus.IN_PROGRESS
    job.error_message = None
    job.completed_at = None
    job.last_progress_at = db_now(session)  # the stuck clock starts again from the operator's act
    session.flush()
    return len(tasks)


def reclaimable(session: Session, *, stale_after: timedelta, limit: int = 1000) -> list[ChunkTask]:
    """Tasks that would otherwise wait forever, locked for the caller (several reconcilers may run).

    PENDING tasks past their backoff, and RUNNING tasks whose lease has run out (the bridge died),
    that have no unsent outbox row and no message published in the last ``stale_after``. The
    window must be longer than a message can sit in a queue behind a backlog, or the reconciler
    adds duplicates (harmless, but wasted work).
    """
    now = db_now(session)
    has_message = outbox.has_recent_message(now - stale_after)
    stuck = or_(
        and_(
            ChunkTask.state == TaskState.PENDING,
            or_(ChunkTask.not_before.is_(None), ChunkTask.not_before <= now),
        ),
        and_(ChunkTask.state == TaskState.RUNNING, ChunkTask.lease_expires_at < now),
    )
    job_live = ElectionJob.status.in_([JobStatus.QUEUED, JobStatus.IN_PROGRESS])
    return list(
        session.execute(
            select(ChunkTask)
            .join(ElectionJob, ElectionJob.job_id == ChunkTask.job_id)
            .where(stuck, job_live, ~has_message)
            .order_by(ChunkTask.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=ChunkTask)
        ).scalars()
    )


def failure_summary(session: Session, job_id: uuid.UUID) -> str:
    """Which chunks failed and why, for the job's error_message (errors never carry secrets)."""
    rows = session.execute(
        select(ElectionCenter.kind, ElectionCenter.chunk_number, ChunkTask.last_error)
        .join(ElectionCenter, ElectionCenter.id == ChunkTask.chunk_id)
        .where(ChunkTask.job_id == job_id, ChunkTask.state == TaskState.FAILED)
        .order_by(ElectionCenter.kind, ElectionCenter.chunk_number)
    ).all()
    lines = [f"{k} {n}: {(err or 'unknown error').splitlines()[0][:300]}" for k, n, err in rows]
    return f"{len(rows)} chunk(s) failed: " + "; ".join(lines)


def _settle_job(session: Session, job: ElectionJob, finalize: Finalizer | None, now: datetime) -> None:
    """End the job if its last task just landed. Runs under the job's row lock, so exactly once."""
    if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
        return
    if job.processed_chunks + job.failed_chunks < job.total_chunks:
        return
    # Counters and states move together, but check the states themselves before ending anything.
    open_tasks = session.scalar(
        select(func.count())
        .select_from(ChunkTask)
        .where(ChunkTask.job_id == job.job_id, ChunkTask.state.in_([TaskState.PENDING, TaskState.RUNNING]))
    )
    if open_tasks:
        return
    if job.failed_chunks == 0:
        if finalize is None:
            from service.jobs.finalize import finalize_job

            finalize = finalize_job
        session.flush()
        finalize(session, job)
        job.status = JobStatus.COMPLETED
        job.completed_at = now
        job.error_message = None
    else:
        job.status = JobStatus.FAILED
        job.completed_at = now
        job.error_message = failure_summary(session, job.job_id)
    # Under the job's lock, in the transaction that ends it: one notification per end, or none.
    callbacks.enqueue(session, job)


def note_stuck(session: Session, job_id: uuid.UUID, note: str) -> None:
    """Record what the reconciler found and did about a stuck job (shown in its status)."""
    job = _lock_job(session, job_id)
    job.reconciler_note = note[:MAX_ERROR_CHARS]
    job.reconciler_noted_at = db_now(session)
