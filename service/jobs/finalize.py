"""What happens exactly once when a job's last chunk task lands.

``finalize_job`` is called by ``transitions.complete`` inside the transaction that marks the last
task DONE, under the job's row lock, just before the job becomes COMPLETED. If it raises, that
whole transaction rolls back: the last chunk's attempt fails with the finalizer's error (counted,
retried, and FAILED with that error at the limit), and nothing of the job's end is half-written.

- TALLY: the product of the chunk tallies is the election's encrypted tally: written to the
  ``election`` row of ``election_center`` and to ``election.encrypted_tally``; the election is
  'tallied'.
- PARTIAL_DECRYPTION / COMPENSATED_DECRYPTION: the shares are already written chunk by chunk; when
  every job of that guardian has COMPLETED, the guardian's escrowed key material is erased. (A FAILED
  job keeps it: an operator's re-drive needs it. It is erased once the re-driven job completes.)
- COMBINE_DECRYPTION: the election result is the election row's decryption; the sum of the chunk
  results must equal it (anyone can check the same from the record), else nothing is published.
  The election is 'decrypted'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import (
    ChunkKind,
    Election,
    ElectionCenter,
    ElectionJob,
    ElectionState,
    GuardianKeyEscrow,
    JobStatus,
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
    """Erase the guardian's escrow once all its decryption jobs (this one included) have completed."""
    guardian = job.guardian_id
    if guardian is None:
        return
    # Lock the escrow first: a guardian's partial and compensated jobs may end at the same moment in
    # two transactions, each seeing the other still running (write skew), and neither would erase.
    # Under the lock the second one reads the first one's committed COMPLETED.
    escrow = session.execute(
        select(GuardianKeyEscrow.id)
        .where(GuardianKeyEscrow.election_id == job.election_id, GuardianKeyEscrow.guardian_id == guardian)
        .with_for_update()
    ).all()
    if not escrow:
        return
    jobs = session.execute(
        select(ElectionJob.job_id, ElectionJob.status).where(
            ElectionJob.election_id == job.election_id,
            ElectionJob.guardian_id == guardian,
            ElectionJob.operation_type.in_(
                [OperationType.PARTIAL_DECRYPTION.value, OperationType.COMPENSATED_DECRYPTION.value]
            ),
        )
    ).all()
    if all(j.job_id == job.job_id or j.status == JobStatus.COMPLETED for j in jobs):
        from service.elections.escrow import erase_escrow

        erase_escrow(session, job.election_id, guardian)


def _selection_counts(result: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(contest, selection) -> count of a reference PlaintextTally JSON."""
    counts: dict[tuple[str, str], int] = {}
    for cid, contest in (result.get("contests") or {}).items():
        for sid, selection in (contest.get("selections") or {}).items():
            counts[(cid, sid)] = int(selection["tally"])
    return counts


def sum_counts(results: Iterable[dict[str, Any]]) -> dict[tuple[str, str], int]:
    total: dict[tuple[str, str], int] = {}
    for r in results:
        for key, n in _selection_counts(r).items():
            total[key] = total.get(key, 0) + n
    return total


def finalize_combine(session: Session, job: ElectionJob) -> None:
    tally_job_id = _tally_job_id(job)
    chunks = _chunks(session, tally_job_id, ChunkKind.CHUNK)
    (election_row,) = _chunks(session, tally_job_id, ChunkKind.ELECTION) or [None]
    if election_row is None or election_row.result is None:
        raise FinalizeError("the election-level tally has no decryption")
    if missing := [c.chunk_number for c in chunks if c.result is None]:
        raise FinalizeError(f"chunks without a decryption: {missing[:10]}")
    whole = _selection_counts(election_row.result)
    parts = sum_counts(c.result for c in chunks)  # type: ignore[misc]
    if whole != parts:
        differ = sorted(k for k in set(whole) | set(parts) if whole.get(k) != parts.get(k))
        raise FinalizeError(f"the chunks' counts do not add up to the election tally's: {differ[:5]}")
    result = dict(election_row.result)
    # Spoiled ballots are decrypted chunk by chunk; the election result lists them all.
    spoiled: dict[str, Any] = {}
    for c in chunks:
        spoiled.update((c.result or {}).get("spoiled_ballots") or {})
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
