"""An operator's re-drive of a job's FAILED chunks, with the checks that make it safe."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from service.db.models import JobStatus, OperationType
from service.elections.escrow import has_escrow
from service.errors import Conflict
from service.jobs import transitions
from service.jobs.status import get_job

_NEEDS_ESCROW = (OperationType.PARTIAL_DECRYPTION.value, OperationType.COMPENSATED_DECRYPTION.value)


def redrive_job(session: Session, job_id: uuid.UUID) -> int:
    """Put the job's FAILED chunks back to work; how many. Refused when there is nothing to re-drive, or
    when a decryption job's key escrow is gone (its retention passed, or an operator erased it)."""
    job = get_job(session, job_id)
    if job.status != JobStatus.FAILED.value and not job.failed_chunks:
        raise Conflict(f"job {job_id} is {job.status} with no failed chunks: nothing to re-drive")
    if job.operation_type in _NEEDS_ESCROW and not has_escrow(session, job_id):
        raise Conflict(
            f"job {job_id}'s key escrow was erased (its retention passed or an operator erased it): the"
            " guardian must start its decryption again (POST /api/decryption/create)"
        )
    return transitions.redrive_failed(session, job_id)
