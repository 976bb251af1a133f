"""What happens exactly once when a job's last chunk task lands.

``finalize_job`` is called by ``transitions.complete`` inside the transaction that marks the last
task DONE, under the job's row lock, just before the job becomes COMPLETED. If it raises, that
whole transaction rolls back: the last chunk's attempt fails with the finalizer's error (counted,
retried, and FAILED with that error at the limit), and nothing of the job's end is half-written.

- TALLY: the product of the chunk tallies is the election's encrypted tally: written to the
  ``election`` row of ``election_center`` and to ``election.encrypted_tally``; the election is
  'tallied'.
- PARTIAL_DECRYPTION / COMPENSATED_DECRYPTION: the shares are already written unit by unit; the job's
  escrowed key material is erased. (A FAILED job keeps it for an operator's re-drive, until the
  retention passes: ``service.elections.escrow.erase_expired``.)
- COMBINE_DECRYPTION: the slices' plaintexts, which together must cover every selection of the
  aggregate exactly once, become the election's decrypted tally; the aggregate must still be the
  product of the chunk tallies (which stay encrypted: anyone can recheck it from the ballots). The
  spoiled ballots' plaintexts are listed with it. The election is 'decrypted'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import (
    ChunkKind,
    Election,
    ElectionCenter,
    ElectionJob,
    ElectionState,
    OperationType,
)


class FinalizeError(RuntimeError):
    pass


def _chunks(session: Session, tally_job_id: Any, kind: ChunkKind) -> list[ElectionCenter]:
    return list(
        session.execute(
            select(ElectionCenter)
            .where(ElectionCenter.tally_job_id == tally_job_id, ElectionCenter.kind == kind.value)
            .order_by(ElectionCenter.chunk_number)
            .with_for_update()
        ).scalars()
    )


def _tally_job_id(job: ElectionJob) -> Any:
    if job.operation_type == OperationType.TALLY:
        return job.job_id
    import uuid

    return uuid.UUID((job.metadata_ or {})["tally_job_id"])


def finalize_tally(session: Session, job: ElectionJob) -> None:
    from compute.tally import CiphertextTally, sum_tallies

    chunks = _chunks(session, job.job_id, ChunkKind.CHUNK)
    missing = [c.chunk_number for c in chunks if c.encrypted_tally is None]
    if missing:
        raise FinalizeError(f"chunks without a tally: {missing[:10]}")
    # One chunk tally decoded at a time: the accumulator is the size of one tally, not of the election.
    total = sum_tallies(CiphertextTally.from_json(c.encrypted_tally) for c in chunks)  # type: ignore[arg-type]
    document = total.to_json()
    (election_row,) = _chunks(session, job.job_id, ChunkKind.ELECTION) or [None]
    if election_row is None:
        raise FinalizeError("the tally has no election row")
    election_row.encrypted_tally = document
    election_row.cast_count = sum(c.cast_count or 0 for c in chunks)
    election_row.spoiled_ids = [i for c in chunks for i in (c.spoiled_ids or [])]
    election = session.get(Election, job.election_id, with_for_update=True)
    assert election is not None
    election.encrypted_tally = document
    election.state = ElectionState.TALLIED.value


def finalize_guardian_job(session: Session, job: ElectionJob) -> None:
    """The job is done with its key material: erase its escrow now."""
    from service.elections.escrow import erase_job_escrow

    erase_job_escrow(session, job.job_id)


def finalize_combine(session: Session, job: ElectionJob) -> None:
    from compute.decrypt_with_shares import merge_plaintexts
    from compute.decryption_share import DecryptionError
    from compute.plaintext_tally import PlaintextTally
    from compute.tally import CiphertextTally, selection_keys, sum_tallies

    tally_job_id = _tally_job_id(job)
    (election_row,) = _chunks(session, tally_job_id, ChunkKind.ELECTION) or [None]
    if election_row is None or election_row.encrypted_tally is None:
        raise FinalizeError("the tally has no aggregate encrypted tally")
    aggregate = CiphertextTally.from_json(election_row.encrypted_tally)
    chunks = _chunks(session, tally_job_id, ChunkKind.CHUNK)
    product = sum_tallies(CiphertextTally.from_json(c.encrypted_tally) for c in chunks)  # type: ignore[arg-type]
    if product.to_json()["contests"] != aggregate.to_json()["contests"]:
        raise FinalizeError("the aggregate encrypted tally is not the product of the chunk tallies")

    slices = _chunks(session, tally_job_id, ChunkKind.SLICE)
    if missing := [c.chunk_number for c in slices if c.result is None]:
        raise FinalizeError(f"aggregate slices without a decryption: {missing[:10]}")
    try:
        plaintext = merge_plaintexts(
            aggregate.object_id,
            (PlaintextTally.from_json(c.result) for c in slices),  # type: ignore[arg-type]
        )
    except DecryptionError as exc:
        raise FinalizeError(str(exc)) from exc
    decrypted = {(cid, sid) for cid, c in plaintext.contests.items() for sid in c.selections}
    if decrypted != set(selection_keys(aggregate)):
        raise FinalizeError("the slices' decryptions do not cover the aggregate's selections exactly")
    result = plaintext.to_json()
    election_row.result = dict(result)

    spoiled: dict[str, Any] = {}
    for c in _chunks(session, tally_job_id, ChunkKind.SPOILED):
        if c.result is None:
            raise FinalizeError(f"spoiled ballots {c.chunk_number} have no decryption")
        spoiled.update(c.result.get("spoiled_ballots") or {})
    if spoiled:
        result["spoiled_ballots"] = spoiled
    election = session.get(Election, job.election_id, with_for_update=True)
    assert election is not None
    election.result = result
    election.state = ElectionState.DECRYPTED.value


FINALIZERS: dict[str, Callable[[Session, ElectionJob], None]] = {
    OperationType.TALLY.value: finalize_tally,
    OperationType.PARTIAL_DECRYPTION.value: finalize_guardian_job,
    OperationType.COMPENSATED_DECRYPTION.value: finalize_guardian_job,
    OperationType.COMBINE_DECRYPTION.value: finalize_combine,
}


def finalize_job(session: Session, job: ElectionJob) -> None:
    FINALIZERS[job.operation_type](session, job)
