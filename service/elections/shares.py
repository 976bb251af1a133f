"""The guardians' shares of each decryption unit: every write to ``decryption_share`` and
``compensated_share``, and the combine's read of them.

A partial decryption task writes the guardian's share of its unit (``write_share``), a compensated one the
available guardian's share for one missing guardian (``write_compensated_share``), each in the transaction
that marks the task DONE: computed from an escrowed key (``bridge/tasks/decryption.py``) or uploaded by the
guardian and checked (``bridge/tasks/share_check.py``) alike. A combine task reads its unit's shares back
(``unit_shares``). Shares are public: proofs anyone can check, no key material.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from service.db.models import CompensatedShare, DecryptionShare, ElectionJob
from service.db.session import is_postgres


def _upsert(session: Session, model: Any, values: dict[str, Any]) -> None:
    # The task row lock already makes this write once; ON CONFLICT keeps a re-drive after a manual
    # cleanup from tripping over a row that is still there.
    if is_postgres(session):
        session.execute(pg_insert(model).values(**values).on_conflict_do_nothing())
    else:
        session.merge(model(**values))


def write_share(session: Session, job: ElectionJob, unit_id: int, share: dict[str, Any]) -> None:
    """The ``decryption_share`` row of the job's guardian for one unit."""
    _upsert(
        session,
        DecryptionShare,
        {"chunk_id": unit_id, "guardian_id": job.guardian_id, "job_id": job.job_id, "share": share},
    )


def write_compensated_share(session: Session, job: ElectionJob, unit_id: int, share: dict[str, Any]) -> None:
    """The ``compensated_share`` row of the job's guardian for one unit, for the job's missing guardian."""
    _upsert(
        session,
        CompensatedShare,
        {
            "chunk_id": unit_id,
            "guardian_id": job.guardian_id,
            "missing_guardian_id": job.missing_guardian_id,
            "job_id": job.job_id,
            "share": share,
        },
    )


def unit_shares(
    session: Session, unit_id: int, available: list[str], missing: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A unit's shares for a combine: (available guardian -> its share, missing guardian -> {available
    guardian -> its compensated share}); shares of guardians outside ``available`` are left out."""
    direct = {
        r.guardian_id: r.share
        for r in session.scalars(select(DecryptionShare).where(DecryptionShare.chunk_id == unit_id))
        if r.guardian_id in available
    }
    compensated: dict[str, dict[str, Any]] = {m: {} for m in missing}
    for r in session.scalars(select(CompensatedShare).where(CompensatedShare.chunk_id == unit_id)):
        if r.missing_guardian_id in compensated and r.guardian_id in available:
            compensated[r.missing_guardian_id][r.guardian_id] = r.share
    return direct, compensated
