"""Read queries over elections and jobs that planning, status, results and decryption share."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from service.db.models import (
    ChunkKind,
    Election,
    ElectionCenter,
    ElectionJob,
    Guardian,
    JobStatus,
    OperationType,
)
from service.errors import Conflict, NotFound

LIVE_STATUSES = (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)
# A job in one of these blocks a new job of the same kind; a FAILED one is re-driven or replaced.
BLOCKING_STATUSES = (*LIVE_STATUSES, JobStatus.COMPLETED.value)


def load_election(session: Session, election_id: int, *, lock: bool = False) -> Election:
    """The election, locked FOR UPDATE when asked: job creation for one election is serialised so two
    concurrent requests cannot both pass a duplicate check (a no-op on SQLite, which has one writer)."""
    stmt = select(Election).where(Election.id == election_id)
    if lock:
        stmt = stmt.with_for_update()
    election = session.scalars(stmt).one_or_none()
    if election is None:
        raise NotFound(f"election {election_id} does not exist")
    return election


def jobs_of(
    session: Session,
    election_id: int,
    operation: OperationType,
    statuses: Sequence[str] | None = None,
    **filters: Any,
) -> list[ElectionJob]:
    stmt = select(ElectionJob).where(
        ElectionJob.election_id == election_id, ElectionJob.operation_type == operation.value
    )
    if statuses is not None:
        stmt = stmt.where(ElectionJob.status.in_(statuses))
    for column, value in filters.items():
        stmt = stmt.where(getattr(ElectionJob, column) == value)
    return list(session.scalars(stmt.order_by(ElectionJob.created_at)))


def completed_tally_job(session: Session, election: Election) -> ElectionJob:
    tallies = jobs_of(session, election.id, OperationType.TALLY)
    if not tallies:
        raise Conflict(f"election {election.id} has no tally yet: create one with POST /api/tally/create")
    done = [j for j in tallies if j.status == JobStatus.COMPLETED.value]
    if not done:
        latest = tallies[-1]
        raise Conflict(
            f"election {election.id}'s tally job {latest.job_id} is {latest.status}, not COMPLETED"
        )
    return done[-1]


def tally_chunk_ids(session: Session, tally_job_id: uuid.UUID, *, include_election: bool) -> list[int]:
    kinds = [ChunkKind.CHUNK.value] + ([ChunkKind.ELECTION.value] if include_election else [])
    stmt = select(ElectionCenter.id).where(
        ElectionCenter.tally_job_id == tally_job_id, ElectionCenter.kind.in_(kinds)
    )
    return list(session.scalars(stmt.order_by(ElectionCenter.kind, ElectionCenter.chunk_number)))


DECRYPTION_UNITS = (ChunkKind.SLICE.value, ChunkKind.SPOILED.value)


def units_of(tally_job_id: uuid.UUID) -> ColumnElement[bool]:
    return and_(ElectionCenter.tally_job_id == tally_job_id, ElectionCenter.kind.in_(DECRYPTION_UNITS))


def decryption_unit_ids(session: Session, tally_job_id: uuid.UUID) -> list[int]:
    stmt = select(ElectionCenter.id).where(units_of(tally_job_id))
    return list(session.scalars(stmt.order_by(ElectionCenter.kind, ElectionCenter.chunk_number)))


def guardian_ids_of(session: Session, election_id: int) -> list[str]:
    stmt = (
        select(Guardian.guardian_id)
        .where(Guardian.election_id == election_id)
        .order_by(Guardian.sequence_order)
    )
    return list(session.scalars(stmt))
