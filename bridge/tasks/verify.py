"""VERIFY of one unit of a decrypted election's tally: the record's checks, from the database.

A chunk row (kind ``chunk``): its ballots streamed in bounded batches (``ChunkContext.ballot_batches``),
decoded, each spoiled one with its decryption from the spoiled units of the tally (only the units
covering the batch's run are read), checked by ``RecordCheck.check_ballots`` (every proof, the
fingerprint prefixes, the cast product, the spoiled ballots' shares); the batches' reports merged into
one. The election row (number 0):
the guardians and the context (``header_problems``) and the decrypted tally's shares (``check_tally``).
The report is written with the task's DONE (``service.jobs.verification.write_report``); the job's
finalizer adds them up.

The ``RecordCheck`` is built once per worker process and job from the database's header (the one the
export writes, ``service.elections.results.header_files``). Public data only: no secret and no escrow
is read.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from bridge.tasks import ChunkContext
from service.db.models import BallotState, ChunkKind, ChunkTask, ElectionJob
from service.jobs.transitions import Outcome

# One RecordCheck per worker process: that of the job it last ran a task of.
_checks: dict[uuid.UUID, Any] = {}


def _check_for(ctx: ChunkContext) -> Any:
    from service.jobs.verification import record_check

    key = ctx.claim.job_id
    if key not in _checks:
        _checks.clear()
        _checks[key] = ctx.read(lambda s: record_check(s, ctx.claim.election_id))
    return _checks[key]


class NotVerifiable(ValueError):
    """A verify task on a row that is neither a tally chunk nor the election row."""


def _check_chunk(ctx: ChunkContext, check: Any, chunk: Any) -> Any:
    from compute.plaintext_tally import PlaintextTally
    from compute.verify import ChunkReport
    from service.elections import crypto
    from service.elections.results import spoiled_decryptions_of

    report = ChunkReport()
    spoiled = int(BallotState.SPOILED)
    for rows in ctx.ballot_batches(chunk):
        ids = [r.object_id for r in rows if r.state == spoiled]
        seqs = (rows[0].seq, rows[-1].seq)
        ballots = [crypto.decode(r.payload) for r in rows]
        del rows

        def read(s: Session, ids: list[str] = ids, seqs: tuple[int, int] = seqs) -> dict[str, Any]:
            return spoiled_decryptions_of(s, ctx.claim.election_id, ids, seqs)

        found = ctx.read(read)
        decryptions = {bid: PlaintextTally.from_json(doc) for bid, doc in found.items()}
        report.merge(check.check_ballots(ballots, decryptions))
        del ballots, decryptions
    if report.ballots != chunk.ballot_count:
        report.problems.append(
            f"chunk {chunk.chunk_number}: {report.ballots} ballots found, {chunk.ballot_count} tallied"
        )
    return report


def run(ctx: ChunkContext) -> Outcome:
    check = _check_for(ctx)
    unit = ctx.chunk()
    if unit.kind == ChunkKind.CHUNK.value:
        report = _check_chunk(ctx, check, unit)
    elif unit.kind == ChunkKind.ELECTION.value:
        report = check.check_tally()
        report.problems[:0] = check.header_problems()
    else:
        raise NotVerifiable(f"{unit.kind} {unit.chunk_number} is not a unit of a verify job")

    def write(session: Session, task: ChunkTask, job: ElectionJob) -> None:
        from service.jobs.verification import write_report

        write_report(session, job.job_id, task.chunk_id, report)

    return ctx.complete(write)
