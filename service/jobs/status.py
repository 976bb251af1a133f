"""Read side of jobs: the status document of a job, job lists and an election's decryption progress.

Whether a job is stuck depends on ``stuck_after`` (``AMARVOTE_STUCK_AFTER_SECONDS``), which every caller
passes from its own settings: this module reads none. It also reads the delivery state of a job's last
completion callback (``callback_state``); every write to ``job_callback`` is ``service.jobs.callbacks``'s,
which imports this module for the document it sends, never the other way round.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import (
    ChunkTask,
    Election,
    ElectionCenter,
    ElectionJob,
    JobCallback,
    JobStatus,
    OperationType,
    TaskState,
)
from service.errors import NotFound
from service.jobs import queries
from service.jobs.clock import aware, db_now

LIVE = (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)

# Job metadata keys a client may see (escrow ids are internal).
PUBLIC_METADATA = (
    "chunk_size",
    "ballot_count",
    "tally_job_id",
    "available_guardian_ids",
    "missing_guardian_ids",
    "shares",  # "uploaded": the guardian computed its shares itself (service.elections.uploads)
)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def poll_url(job_id: uuid.UUID) -> str:
    return f"/api/jobs/{job_id}/status"


def get_job(session: Session, job_id: uuid.UUID) -> ElectionJob:
    job = session.get(ElectionJob, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def failed_chunks(session: Session, job_id: uuid.UUID, limit: int = 100) -> list[dict[str, Any]]:
    rows = session.execute(
        select(
            ChunkTask.id,
            ChunkTask.attempts,
            ChunkTask.last_error,
            ElectionCenter.kind,
            ElectionCenter.chunk_number,
        )
        .join(ElectionCenter, ElectionCenter.id == ChunkTask.chunk_id)
        .where(ChunkTask.job_id == job_id, ChunkTask.state == TaskState.FAILED.value)
        .order_by(ElectionCenter.kind, ElectionCenter.chunk_number)
        .limit(limit)
    ).all()
    return [
        {
            "chunkKind": r.kind,
            "chunkNumber": r.chunk_number,
            "taskId": r.id,
            "attempts": r.attempts,
            "error": r.last_error,
        }
        for r in rows
    ]


def _stuck_after(stuck_after: timedelta | float) -> timedelta:
    return stuck_after if isinstance(stuck_after, timedelta) else timedelta(seconds=stuck_after)


def last_progress(job: ElectionJob) -> datetime | None:
    """When a chunk of the job last ended (or it was created or re-driven)."""
    return aware(job.last_progress_at or job.created_at)


def is_stuck(job: ElectionJob, now: datetime, stuck_after: timedelta) -> bool:
    """A live job with no chunk ending for ``stuck_after``: its chunks wait with no consumer, or keep
    dying, or sit behind a window that never frees. Computed from the rows on every read, so it needs no
    process running to be raised, and drops as soon as a chunk ends."""
    since = last_progress(job)
    return job.status in LIVE and since is not None and now - since > stuck_after


def stuck_jobs(session: Session, stuck_after: timedelta | float) -> list[ElectionJob]:
    """Live jobs that are stuck, oldest progress first (compared in Python: SQLite keeps timestamps as
    text in more than one form)."""
    threshold, now = _stuck_after(stuck_after), db_now(session)
    live = session.scalars(select(ElectionJob).where(ElectionJob.status.in_(LIVE)))
    stuck = [j for j in live if is_stuck(j, now, threshold)]
    return sorted(stuck, key=lambda j: last_progress(j) or now)


def job_document(
    session: Session,
    job: ElectionJob,
    *,
    stuck_after: timedelta | float,
    detail: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    total = job.total_chunks or 0
    done = job.processed_chunks or 0
    end = job.completed_at
    duration = (end - job.started_at).total_seconds() if end and job.started_at else None
    doc: dict[str, Any] = {
        "jobId": str(job.job_id),
        "electionId": job.election_id,
        "operationType": job.operation_type,
        "status": job.status,
        "totalChunks": total,
        "processedChunks": done,
        "failedChunks": job.failed_chunks or 0,
        "progressPercent": round(100.0 * done / total, 2) if total else 0.0,
        "guardianId": job.guardian_id,
        "missingGuardianId": job.missing_guardian_id,
        "parentJobId": str(job.parent_job_id) if job.parent_job_id else None,
        "createdBy": job.created_by,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "completedAt": _iso(job.completed_at),
        "updatedAt": _iso(job.updated_at),
        "durationSeconds": duration,
        "errorMessage": job.error_message,
        "metadata": {k: v for k, v in (job.metadata_ or {}).items() if k in PUBLIC_METADATA},
        "pollUrl": poll_url(job.job_id),
        "priority": job.priority or 0,
        "stuck": is_stuck(job, now or db_now(session), _stuck_after(stuck_after)),
        "lastProgressAt": _iso(last_progress(job)),
        "reconcilerNote": job.reconciler_note,
        "reconcilerNotedAt": _iso(job.reconciler_noted_at),
        "callbackUrl": job.callback_url,
    }
    if job.operation_type == OperationType.VERIFY:
        from service.jobs.verification import verdict_of

        doc["verification"] = verdict_of(job)  # None until the job completes
    if detail:
        doc["failedChunkErrors"] = failed_chunks(session, job.job_id) if job.failed_chunks else []
        doc["callback"] = callback_state(session, job.job_id) if job.callback_url else None
    return doc


def callback_state(session: Session, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The delivery state of the job's last completion callback, for its status document."""
    row = session.scalars(
        select(JobCallback).where(JobCallback.job_id == job_id).order_by(JobCallback.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return {
        "jobStatus": row.job_status,
        "state": row.state,
        "attempts": row.attempts,
        "lastError": row.last_error,
        "createdAt": _iso(row.created_at),
        "deliveredAt": _iso(row.delivered_at),
    }


def list_jobs(
    session: Session,
    election_id: int | None,
    created_by: str | None,
    *,
    stuck_after: timedelta | float | None = None,
) -> list[ElectionJob]:
    """Jobs, newest first; ``created_by`` restricts to one owner (non-admin callers); ``stuck_after``, when
    given, to the jobs stuck for that long."""
    if stuck_after is not None:
        jobs = stuck_jobs(session, stuck_after)
        return [
            j
            for j in sorted(jobs, key=lambda j: aware(j.created_at) or db_now(session), reverse=True)
            if (election_id is None or j.election_id == election_id)
            and (created_by is None or j.created_by == created_by)
        ]
    stmt = select(ElectionJob).order_by(ElectionJob.created_at.desc()).limit(1000)
    if election_id is not None:
        stmt = stmt.where(ElectionJob.election_id == election_id)
    if created_by is not None:
        stmt = stmt.where(ElectionJob.created_by == created_by)
    return list(session.scalars(stmt))


def decryption_status(session: Session, election_id: int) -> dict[str, Any]:
    """Per guardian: its partial job and compensated jobs; whether a combine can start."""
    election = session.get(Election, election_id)
    if election is None:
        raise NotFound(f"election {election_id} does not exist")
    guardians = queries.guardian_ids_of(session, election_id)
    jobs = list(
        session.scalars(
            select(ElectionJob).where(ElectionJob.election_id == election_id).order_by(ElectionJob.created_at)
        )
    )

    def brief(j: ElectionJob) -> dict[str, Any]:
        return {
            "jobId": str(j.job_id),
            "status": j.status,
            "processedChunks": j.processed_chunks,
            "totalChunks": j.total_chunks,
            "missingGuardianId": j.missing_guardian_id,
        }

    per_guardian = []
    completed = 0
    for g in guardians:
        partial = [
            j for j in jobs if j.operation_type == OperationType.PARTIAL_DECRYPTION and j.guardian_id == g
        ]
        comp = [
            j for j in jobs if j.operation_type == OperationType.COMPENSATED_DECRYPTION and j.guardian_id == g
        ]
        if partial and partial[-1].status == JobStatus.COMPLETED:
            completed += 1
        per_guardian.append(
            {
                "guardianId": g,
                "partialDecryption": brief(partial[-1]) if partial else None,
                "compensatedDecryptions": [brief(j) for j in comp],
            }
        )
    combine = [j for j in jobs if j.operation_type == OperationType.COMBINE_DECRYPTION]
    tally = [j for j in jobs if j.operation_type == OperationType.TALLY]
    return {
        "electionId": election_id,
        "electionState": election.state,
        "numberOfGuardians": election.number_of_guardians,
        "quorum": election.quorum,
        "guardiansDecrypted": completed,
        "quorumMet": completed >= election.quorum,
        "tally": brief(tally[-1]) if tally else None,
        "guardians": per_guardian,
        "combine": brief(combine[-1]) if combine else None,
    }
