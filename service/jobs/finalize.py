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

import uuid
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import (
    ChunkKind,
    Election,
    ElectionCenter,
    ElectionJob,
    ElectionState,
    OperationType,
)

# Rows decoded at a time while streaming JSON columns: the finalizer's memory is that of a few chunk
# tallies, not of the election (a million ballots in chunks of 5,000 are 200 tallies).
STREAM_ROWS = 4


class FinalizeError(RuntimeError):
    pass


def _of(tally_job_id: uuid.UUID, kind: ChunkKind) -> Any:
    return (ElectionCenter.tally_job_id == tally_job_id) & (ElectionCenter.kind == kind.value)


def _lock(session: Session, tally_job_id: uuid.UUID, kind: ChunkKind) -> int:
    """Lock the rows of one kind (ids only) for this transaction; how many there are."""
    ids = session.scalars(select(ElectionCenter.id).where(_of(tally_job_id, kind)).with_for_update()).all()
    return len(ids)


def _stream(session: Session, column: Any, tally_job_id: uuid.UUID, kind: ChunkKind) -> Iterator[Any]:
    """One JSON column of the rows of one kind, in chunk order, a few rows at a time."""
    stmt = (
        select(ElectionCenter.chunk_number, column)
        .where(_of(tally_job_id, kind))
        .order_by(ElectionCenter.chunk_number)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for number, value in session.execute(stmt):
        if value is None:
            raise FinalizeError(f"{kind.value} {number} has nothing to finalize")
        yield value


def _one(session: Session, tally_job_id: uuid.UUID, kind: ChunkKind) -> ElectionCenter:
    row = session.scalars(
        select(ElectionCenter).where(_of(tally_job_id, kind)).with_for_update()
    ).one_or_none()
    if row is None:
        raise FinalizeError(f"the tally has no {kind.value} row")
    return row


def _product(session: Session, tally_job_id: uuid.UUID) -> Any:
    """The product of the chunk tallies, decoding one chunk tally at a time."""
    from compute.tally import CiphertextTally, sum_tallies

    _lock(session, tally_job_id, ChunkKind.CHUNK)
    chunks = _stream(session, ElectionCenter.encrypted_tally, tally_job_id, ChunkKind.CHUNK)
    return sum_tallies(CiphertextTally.from_json(doc) for doc in chunks)


def _tally_job_id(job: ElectionJob) -> uuid.UUID:
    if job.operation_type == OperationType.TALLY:
        return job.job_id
    return uuid.UUID((job.metadata_ or {})["tally_job_id"])


def finalize_tally(session: Session, job: ElectionJob) -> None:
    document = _product(session, job.job_id).to_json()
    election_row = _one(session, job.job_id, ChunkKind.ELECTION)
    election_row.encrypted_tally = document
    election_row.cast_count = int(
        session.scalar(
            select(func.coalesce(func.sum(ElectionCenter.cast_count), 0)).where(
                _of(job.job_id, ChunkKind.CHUNK)
            )
        )
        or 0
    )
    election_row.spoiled_ids = [
        i for ids in _stream(session, ElectionCenter.spoiled_ids, job.job_id, ChunkKind.CHUNK) for i in ids
    ]
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
    from compute.tally import CiphertextTally, selection_keys

    tally_job_id = _tally_job_id(job)
    election_row = _one(session, tally_job_id, ChunkKind.ELECTION)
    if election_row.encrypted_tally is None:
        raise FinalizeError("the tally has no aggregate encrypted tally")
    aggregate = CiphertextTally.from_json(election_row.encrypted_tally)
    if _product(session, tally_job_id).to_json()["contests"] != aggregate.to_json()["contests"]:
        raise FinalizeError("the aggregate encrypted tally is not the product of the chunk tallies")

    _lock(session, tally_job_id, ChunkKind.SLICE)
    slices = _stream(session, ElectionCenter.result, tally_job_id, ChunkKind.SLICE)
    try:
        plaintext = merge_plaintexts(aggregate.object_id, (PlaintextTally.from_json(doc) for doc in slices))
    except DecryptionError as exc:
        raise FinalizeError(str(exc)) from exc
    decrypted = {(cid, sid) for cid, c in plaintext.contests.items() for sid in c.selections}
    if decrypted != set(selection_keys(aggregate)):
        raise FinalizeError("the slices' decryptions do not cover the aggregate's selections exactly")
    result = plaintext.to_json()
    election_row.result = dict(result)

    # The spoiled ballots' decryptions stay in their units (service.elections.results reads them there):
    # gathered into one row they pass PostgreSQL's 256 MB bound on a jsonb value at about 800 ballots,
    # and one process would hold them all. Each unit must hold one decryption per ballot of its run.
    _lock(session, tally_job_id, ChunkKind.SPOILED)
    stmt = (
        select(ElectionCenter.chunk_number, ElectionCenter.ballot_count, ElectionCenter.result)
        .where(_of(tally_job_id, ChunkKind.SPOILED))
        .order_by(ElectionCenter.chunk_number)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for number, count, doc in session.execute(stmt):
        held = len((doc or {}).get("spoiled_ballots") or {})
        if held != count:
            raise FinalizeError(f"spoiled {number}: {held} decryptions for its {count} spoiled ballots")
    election = session.get(Election, job.election_id, with_for_update=True)
    assert election is not None
    election.result = result
    election.state = ElectionState.DECRYPTED.value


def finalize_verify(session: Session, job: ElectionJob) -> None:
    from service.jobs.verification import store_verdict

    store_verdict(session, job)


FINALIZERS: dict[str, Callable[[Session, ElectionJob], None]] = {
    OperationType.TALLY.value: finalize_tally,
    OperationType.PARTIAL_DECRYPTION.value: finalize_guardian_job,
    OperationType.COMPENSATED_DECRYPTION.value: finalize_guardian_job,
    OperationType.COMBINE_DECRYPTION.value: finalize_combine,
    OperationType.VERIFY.value: finalize_verify,
}


def finalize_job(session: Session, job: ElectionJob) -> None:
    FINALIZERS[job.operation_type](session, job)
