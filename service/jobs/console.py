"""Read side of the operator console: elections with where each guardian stands, jobs with their chunk
counts and outbox backlog, one job's chunks. Everything from the database (the truth), read each time."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import (
    CeremonyGuardian,
    ChunkTask,
    Election,
    ElectionCenter,
    ElectionJob,
    Outbox,
    TaskState,
)
from service.elections.elections import ballot_counts, guardians_of
from service.jobs import status
from service.jobs.clock import aware, db_now

JOB_KINDS = ("TALLY", "PARTIAL_DECRYPTION", "COMPENSATED_DECRYPTION", "COMBINE_DECRYPTION", "VERIFY")
JOB_STATES = ("QUEUED", "IN_PROGRESS", "COMPLETED", "FAILED")
MAX_JOBS = 200  # a page of the console


def _iso(value: Any) -> str | None:
    value = aware(value)
    return value.isoformat() if value else None


def _ceremony(e: Election, held: dict[str, CeremonyGuardian], gid: str, has_keys: bool) -> str:
    if has_keys:
        return "keys published"
    g = held.get(gid)
    if g is None:
        return "not started"
    if g.confirmed_at:
        return "confirmed"
    if g.verifications_posted_at:
        return "backups verified"
    if g.backups_posted_at:
        return "backups posted"
    if g.key_posted_at:
        return "key posted"
    return "waiting for its key"


def elections(session: Session) -> list[dict[str, Any]]:
    """Every election, newest first: state, ballot counts and, per guardian, its key ceremony and
    decryption."""
    out = []
    for e in session.scalars(select(Election).order_by(Election.id.desc()).limit(MAX_JOBS)):
        keys = {g.guardian_id: g for g in guardians_of(session, e.id)}
        held = {
            g.guardian_id: g
            for g in session.scalars(select(CeremonyGuardian).where(CeremonyGuardian.election_id == e.id))
        }
        ids = sorted(set(keys) | set(held), key=lambda g: (keys[g].sequence_order if g in keys else 0, g))
        decryption = status.decryption_status(session, e.id) if keys else None
        per_guardian = {d["guardianId"]: d for d in (decryption or {}).get("guardians", [])}
        missing = set(e.missing_guardian_ids or [])
        guardians = []
        for gid in ids:
            d = per_guardian.get(gid) or {}
            partial = d.get("partialDecryption")
            if gid in missing:
                dec = "declared missing"
            elif partial:
                dec = f"{partial['status'].lower()} ({partial['processedChunks']}/{partial['totalChunks']})"
            else:
                dec = "not started"
            guardians.append(
                {
                    "guardian_id": gid,
                    "ceremony": _ceremony(e, held, gid, e.context is not None),
                    "decryption": dec,
                }
            )
        out.append(
            {
                "election_id": e.id,
                "name": e.name,
                "state": e.state,
                "key_mode": e.key_mode,
                "quorum": e.quorum,
                "number_of_guardians": e.number_of_guardians,
                "ballots": ballot_counts(session, e.id),
                "guardians": guardians,
            }
        )
    return out


def _chunk_counts(session: Session, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    counts: dict[uuid.UUID, dict[str, int]] = defaultdict(lambda: {s.value: 0 for s in TaskState})
    if job_ids:
        rows = session.execute(
            select(ChunkTask.job_id, ChunkTask.state, func.count())
            .where(ChunkTask.job_id.in_(job_ids))
            .group_by(ChunkTask.job_id, ChunkTask.state)
        ).all()
        for job_id, state, n in rows:
            counts[job_id][state] = int(n)
    return counts


def outbox_backlog(session: Session, job_ids: list[uuid.UUID] | None = None) -> dict[str, int]:
    """Unsent outbox rows (waiting for the relay, the fair-share window or a retry's backoff), per job."""
    stmt = select(Outbox.job_id, func.count()).where(Outbox.sent_at.is_(None)).group_by(Outbox.job_id)
    if job_ids is not None:
        if not job_ids:
            return {}
        stmt = stmt.where(Outbox.job_id.in_(job_ids))
    return {str(j): int(n) for j, n in session.execute(stmt).all()}


def outbox_by_operation(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Outbox.operation, func.count()).where(Outbox.sent_at.is_(None)).group_by(Outbox.operation)
    ).all()
    return {op: int(n) for op, n in rows}


def jobs(
    session: Session,
    *,
    election_id: int | None = None,
    state: str | None = None,
    kind: str | None = None,
    stuck_after: float,
) -> list[dict[str, Any]]:
    """Jobs, newest first, filtered; each with its chunk counts by state and its outbox backlog."""
    stmt = select(ElectionJob).order_by(ElectionJob.created_at.desc()).limit(MAX_JOBS)
    if election_id is not None:
        stmt = stmt.where(ElectionJob.election_id == election_id)
    if state:
        stmt = stmt.where(ElectionJob.status == state)
    if kind:
        stmt = stmt.where(ElectionJob.operation_type == kind)
    rows = list(session.scalars(stmt))
    ids = [j.job_id for j in rows]
    counts, backlog, now = _chunk_counts(session, ids), outbox_backlog(session, ids), db_now(session)
    out = []
    for j in rows:
        doc = status.job_document(session, j, detail=False, stuck_after=stuck_after, now=now)
        doc["chunks"] = counts[j.job_id]
        doc["outboxBacklog"] = backlog.get(str(j.job_id), 0)
        doc["callback"] = None
        out.append(doc)
    if any(j.callback_url for j in rows):
        for doc, j in zip(out, rows, strict=True):
            if j.callback_url:
                doc["callback"] = status.callback_state(session, j.job_id)
    return out


def job(session: Session, job_id: uuid.UUID, *, stuck_after: float) -> dict[str, Any]:
    """One job's status document with every chunk: state, attempts, last error, run time."""
    j = status.get_job(session, job_id)
    doc = status.job_document(session, j, stuck_after=stuck_after)
    doc["chunks"] = _chunk_counts(session, [j.job_id])[j.job_id]
    doc["outboxBacklog"] = outbox_backlog(session, [j.job_id]).get(str(j.job_id), 0)
    rows = session.execute(
        select(
            ChunkTask.id,
            ChunkTask.state,
            ChunkTask.attempts,
            ChunkTask.last_error,
            ChunkTask.started_at,
            ChunkTask.finished_at,
            ElectionCenter.kind,
            ElectionCenter.chunk_number,
        )
        .join(ElectionCenter, ElectionCenter.id == ChunkTask.chunk_id)
        .where(ChunkTask.job_id == job_id)
        .order_by(ElectionCenter.kind, ElectionCenter.chunk_number, ChunkTask.id)
        .limit(5000)
    ).all()
    tasks = []
    for r in rows:
        start, end = aware(r.started_at), aware(r.finished_at)
        tasks.append(
            {
                "taskId": r.id,
                "kind": r.kind,
                "number": r.chunk_number,
                "state": r.state,
                "attempts": r.attempts,
                "lastError": r.last_error,
                "startedAt": _iso(start),
                "finishedAt": _iso(end),
                "runSeconds": round((end - start).total_seconds(), 3) if start and end else None,
            }
        )
    doc["tasks"] = tasks
    return doc


def running_by_operation(session: Session) -> dict[str, int]:
    """Chunk tasks RUNNING per operation: each holds its message unacked on RabbitMQ (AMQP's passive
    declare reports no unacked count, so the console shows this beside the broker's numbers)."""
    rows = session.execute(
        select(ElectionJob.operation_type, func.count())
        .join(ChunkTask, ChunkTask.job_id == ElectionJob.job_id)
        .where(ChunkTask.state == TaskState.RUNNING.value)
        .group_by(ElectionJob.operation_type)
    ).all()
    return {op: int(n) for op, n in rows}


def outbox_queue_depths(session: Session) -> list[dict[str, Any]]:
    """The queues page of an API that was given no broker to read (``uvicorn service.api.app:app``, or the
    embedded default): the outbox backlog per operation, which is the queue on the embedded default."""
    from service.db.models import OperationType

    backlog = outbox_by_operation(session)
    return [
        {
            "operation": op.value,
            "queue": "outbox",
            "ready": backlog.get(op.value, 0),
            "consumers": None,
            "dead_letters": None,
            "unacked": None,
        }
        for op in OperationType
    ]
