"""An operator's re-drive of a job's FAILED chunks, with the checks that make it safe."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import ElectionJob, JobStatus, OperationType
from service.elections.escrow import has_escrow
from service.errors import Conflict
from service.jobs import transitions
from service.jobs.status import get_job

_NEEDS_ESCROW = (OperationType.PARTIAL_DECRYPTION.value, OperationType.COMPENSATED_DECRYPTION.value)


def redrive_job(session: Session, job_id: uuid.UUID) -> int:
    """Put the job's FAILED chunks back to work; how many. Refused when there is nothing to re-drive, when
    a newer job of the same kind (and guardian) superseded it (both would then complete: two combines,
    two partial decryptions of one guardian), or when a decryption job's key escrow is gone (its retention
    passed, or an operator erased it)."""
    job = get_job(session, job_id)
    if job.status != JobStatus.FAILED.value and not job.failed_chunks:
        raise Conflict(f"job {job_id} is {job.status} with no failed chunks: nothing to re-drive")
    newer = session.scalars(
        select(ElectionJob.job_id)
        .where(
            ElectionJob.election_id == job.election_id,
            ElectionJob.operation_type == job.operation_type,
            ElectionJob.guardian_id.is_(None)
            if job.guardian_id is None
            else ElectionJob.guardian_id == job.guardian_id,
            ElectionJob.missing_guardian_id.is_(None)
            if job.missing_guardian_id is None
            else ElectionJob.missing_guardian_id == job.missing_guardian_id,
            ElectionJob.created_at > job.created_at,
            ElectionJob.job_id != job.job_id,
        )
        .order_by(ElectionJob.created_at.desc())
    ).first()
    if newer is not None:
        raise Conflict(
            f"job {job_id} was superseded by job {newer} of the same kind: re-drive that one instead"
        )
    uploaded = (job.metadata_ or {}).get("shares") == transitions.UPLOADED_SHARES
    if job.operation_type in _NEEDS_ESCROW and not uploaded and not has_escrow(session, job_id):
        raise Conflict(
            f"job {job_id}'s key escrow was erased (its retention passed or an operator erased it): the"
            " guardian must start its decryption again (POST /api/decryption/create)"
        )
    return transitions.redrive_failed(session, job_id)
