"""Key escrow for running decryption jobs: the least key material each job needs, sealed under the server
secret, one row per job.

- A PARTIAL_DECRYPTION job holds the guardian's election secret key only (``DecryptionKey``).
- A COMPENSATED_DECRYPTION job holds the one opened backup coordinate for its missing guardian only
  (``CompensationKey``): never the guardian's own secret key, its polynomial or other backups.

Written by ``service.elections.decryption`` once the guardian's credentials passed their checks; read
by the job's Ray tasks (``load_key``); erased when the job completes (``erase_job_escrow``, from the
job's finalizer), by an operator (``erase_election_escrows``), or, for a FAILED job kept for a re-drive,
once it has been FAILED for longer than the retention (``erase_expired``, from ``bridge.escrow_sweeper``).
Never in a message, a log or a Ray argument.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from compute.guardian import CompensationKey, DecryptionKey
from service.db.models import ElectionJob, GuardianKeyEscrow, JobStatus
from service.db.session import rowcount
from service.jobs.clock import db_now
from service.security.sealing import open_with_secret, seal_with_secret

PURPOSE = "guardian-key-escrow"
EscrowedKey = DecryptionKey | CompensationKey


def _context(election_id: int, guardian_id: str, job_id: uuid.UUID, missing: str | None) -> str:
    # Bound as associated data: a sealed row moved under another job or guardian does not open.
    return f"escrow:{int(election_id)}:{guardian_id}:{job_id}:{missing or ''}"


def store_escrow(session: Session, secret: bytes, job: ElectionJob, key: EscrowedKey) -> uuid.UUID:
    """Seal ``key`` for ``job`` (one escrow per job: a second call re-seals in place)."""
    missing = key.missing_guardian_id if isinstance(key, CompensationKey) else None
    if key.guardian_id != job.guardian_id or missing != job.missing_guardian_id:
        raise ValueError("the key does not belong to this job's guardian")
    sealed = seal_with_secret(
        json.dumps(key.to_json(), separators=(",", ":")).encode("utf-8"),
        secret,
        purpose=PURPOSE,
        context=_context(job.election_id, key.guardian_id, job.job_id, missing),
    )
    row = session.scalars(
        select(GuardianKeyEscrow).where(GuardianKeyEscrow.job_id == job.job_id).with_for_update()
    ).one_or_none()
    if row is None:
        row = GuardianKeyEscrow(
            id=uuid.uuid4(),
            job_id=job.job_id,
            election_id=job.election_id,
            guardian_id=key.guardian_id,
            missing_guardian_id=missing,
            sealed=sealed,
        )
        session.add(row)
    else:
        row.sealed = sealed
    session.flush()
    return row.id


def has_escrow(session: Session, job_id: uuid.UUID) -> bool:
    return session.scalar(select(GuardianKeyEscrow.id).where(GuardianKeyEscrow.job_id == job_id)) is not None


def load_key(session: Session, job_id: uuid.UUID, secret: bytes) -> EscrowedKey:
    """The key material of ``job_id``; KeyError if erased (the job ended or expired, or an operator)."""
    row = session.scalars(select(GuardianKeyEscrow).where(GuardianKeyEscrow.job_id == job_id)).one_or_none()
    if row is None:
        raise KeyError(
            f"job {job_id} has no key escrow (erased: the job ended, its retention passed, or an operator"
            " erased it); the guardian must start its decryption again"
        )
    plain = json.loads(
        open_with_secret(
            row.sealed,
            secret,
            purpose=PURPOSE,
            context=_context(row.election_id, row.guardian_id, row.job_id, row.missing_guardian_id),
        )
    )
    return CompensationKey.from_json(plain) if "coordinate" in plain else DecryptionKey.from_json(plain)


def erase_job_escrow(session: Session, job_id: uuid.UUID) -> bool:
    result = session.execute(delete(GuardianKeyEscrow).where(GuardianKeyEscrow.job_id == job_id))
    return bool(rowcount(result))


def erase_election_escrows(session: Session, election_id: int) -> int:
    """The operator's command: every escrow of the election, whatever its job's state (running jobs then
    fail their next chunk and need the guardians to start again)."""
    result = session.execute(delete(GuardianKeyEscrow).where(GuardianKeyEscrow.election_id == election_id))
    return rowcount(result)


def erase_expired(session: Session, retention: timedelta, now: datetime | None = None) -> int:
    """Erase escrows whose job COMPLETED (a backstop: the finalizer erases them) or has been FAILED for
    longer than ``retention``. A re-driven job is IN_PROGRESS again and keeps its escrow."""
    cutoff = (now or db_now(session)) - retention
    ended = select(ElectionJob.job_id).where(
        or_(
            ElectionJob.status == JobStatus.COMPLETED.value,
            (ElectionJob.status == JobStatus.FAILED.value) & (ElectionJob.completed_at < cutoff),
        )
    )
    result = session.execute(delete(GuardianKeyEscrow).where(GuardianKeyEscrow.job_id.in_(ended)))
    return rowcount(result)
