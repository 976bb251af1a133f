"""PARTIAL_DECRYPTION and COMPENSATED_DECRYPTION of one chunk (or of the election-level row).

A guardian's share of the chunk's encrypted tally and of each spoiled ballot in the chunk, with
Chaum-Pedersen proofs, written as one ``decryption_share`` (or ``compensated_share``) row: the
reference's share JSON for the tally, plus ``spoiled_ballots`` {ballot id: share JSON}.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from bridge.tasks import ChunkContext
from bridge.tasks.common import (
    election_context,
    election_data,
    guardian_records,
    job_of,
    private_guardian,
    spoiled_ballots,
)
from service.db.models import ChunkTask, CompensatedShare, DecryptionShare, ElectionJob
from service.jobs.transitions import Outcome


def _tally_of(chunk: Any) -> Any:
    from compute.tally import CiphertextTally

    if chunk.encrypted_tally is None:
        raise LookupError(f"chunk {chunk.chunk_number} has no encrypted tally")
    return CiphertextTally.from_json(chunk.encrypted_tally)


def _upsert(session: Session, model: Any, values: dict[str, Any]) -> None:
    # The task row lock already makes this write once; ON CONFLICT keeps a re-drive after a manual
    # cleanup from tripping over a row that is still there.
    if session.get_bind().dialect.name == "postgresql":
        session.execute(pg_insert(model).values(**values).on_conflict_do_nothing())
    else:
        session.merge(model(**values))


def run_partial(ctx: ChunkContext) -> Outcome:
    from compute.decryption import compute_decryption_share

    chunk = ctx.chunk()
    job = job_of(ctx)
    context = election_context(election_data(ctx))
    guardian = private_guardian(ctx, job)
    share = compute_decryption_share(guardian, _tally_of(chunk), context, workers=1).to_json()
    share["spoiled_ballots"] = {
        b.object_id: compute_decryption_share(guardian, b, context, workers=1).to_json()
        for b in spoiled_ballots(ctx, chunk)
    }
    del guardian

    def write(session: Session, task: ChunkTask, job: ElectionJob) -> None:
        _upsert(
            session,
            DecryptionShare,
            {"chunk_id": task.chunk_id, "guardian_id": job.guardian_id, "job_id": job.job_id, "share": share},
        )

    return ctx.complete(write)


def run_compensated(ctx: ChunkContext) -> Outcome:
    from compute.decryption import compute_compensated_decryption_share

    chunk = ctx.chunk()
    job = job_of(ctx)
    context = election_context(election_data(ctx))
    missing = guardian_records(ctx)[job.missing_guardian_id]
    guardian = private_guardian(ctx, job)
    share = compute_compensated_decryption_share(
        guardian, missing, _tally_of(chunk), context, workers=1
    ).to_json()
    share["spoiled_ballots"] = {
        b.object_id: compute_compensated_decryption_share(guardian, missing, b, context, workers=1).to_json()
        for b in spoiled_ballots(ctx, chunk)
    }
    del guardian

    def write(session: Session, task: ChunkTask, job: ElectionJob) -> None:
        _upsert(
            session,
            CompensatedShare,
            {
                "chunk_id": task.chunk_id,
                "guardian_id": job.guardian_id,
                "missing_guardian_id": job.missing_guardian_id,
                "job_id": job.job_id,
                "share": share,
            },
        )

    return ctx.complete(write)
