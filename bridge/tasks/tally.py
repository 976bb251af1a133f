"""TALLY: verify every ballot of one chunk and accumulate the cast ones into the chunk's encrypted tally.

Ballots are streamed in bounded pages (``ChunkContext.ballot_batches``): a worker holds one proof
batch of decoded ballots (``compute.validate.VALIDATION_BATCH_SELECTIONS`` selections, several pages),
the running tally (one ciphertext per selection) and the chunk's ballot ids, whatever the election's size.
Any invalid ballot fails the chunk with the ballot named: a tally never silently leaves one out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from bridge.tasks import ChunkContext
from bridge.tasks.common import election_context, election_data, internal_manifest
from service.db.models import ChunkTask, ElectionCenter, ElectionJob
from service.jobs.transitions import Outcome

if TYPE_CHECKING:
    from compute.ballot import SubmittedBallot


class InvalidBallots(ValueError):
    pass


def run(ctx: ChunkContext) -> Outcome:
    from compute.ballot import decode_submitted_ballot
    from compute.tally import accumulate, new_tally
    from compute.validate import VALIDATION_BATCH_SELECTIONS, selection_count, validate_ballots

    chunk = ctx.chunk()
    data = election_data(ctx)
    internal, context = internal_manifest(data), election_context(data)
    tally = new_tally(internal)
    failures: list[str] = []
    # Database pages are bounded in bytes (about 120 ten-selection ballots); proofs are checked in
    # batches of VALIDATION_BATCH_SELECTIONS (a default chunk of 12-selection ballots), many pages, where
    # the multi-exponentiation costs a third fewer multiplies per selection than one page's (the memory
    # bound is in compute/validate.py).
    pending: list[SubmittedBallot] = []
    selections = 0

    def flush() -> None:
        bad = validate_ballots(pending, internal, context, batch_size=max(1, len(pending)))
        failures.extend(f.message for f in bad)
        if not bad:
            accumulate(tally, pending)
        pending.clear()

    for rows in ctx.ballot_batches(chunk):
        batch = [decode_submitted_ballot(row.payload) for row in rows]
        del rows
        pending += batch
        selections += sum(selection_count(b) for b in batch)
        del batch
        if selections >= VALIDATION_BATCH_SELECTIONS:
            flush()
            selections = 0
    if pending:
        flush()
    if failures:
        n, first = len(failures), failures[0]
        raise InvalidBallots(f"{n} invalid ballot(s) in chunk {chunk.chunk_number}: {first}")

    document = tally.to_json()
    cast, spoiled = tally.cast(), sorted(tally.spoiled_ballot_ids)

    def write(session: Session, task: ChunkTask, _job: ElectionJob) -> None:
        row = session.get(ElectionCenter, task.chunk_id)
        assert row is not None
        row.encrypted_tally = document
        row.cast_count = cast
        row.spoiled_ids = spoiled

    return ctx.complete(write)
