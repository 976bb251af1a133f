"""Chunk task bodies for the bridge tests, importable by Ray workers as ``tests.bridge.fakes``.

``count_tally`` stands in for the real tally: it streams the chunk's ballots and records how many
it saw. Its effect on the election row is additive (ballots and chunks counted), so a result
written twice would show as a double count; the finalizer counts its own runs the same way.
The job's metadata steers it: ``sleep`` seconds per chunk, ``poison`` chunk numbers that always
raise (until an operator edits the metadata: "the cause removed"), ``die`` chunk numbers whose first
attempt kills its Ray worker process, ``hang`` chunk numbers that never return.
"""

from __future__ import annotations

import os
import signal
import time

from sqlalchemy.orm import Session

from bridge.tasks import ChunkContext
from service.db.models import ChunkTask, Election, ElectionCenter, ElectionJob
from service.jobs.transitions import Outcome

BODY = "tests.bridge.fakes:count_tally"


class PoisonError(RuntimeError):
    pass


def _add(session: Session, election_id: int, **deltas: int) -> None:
    election = session.get(Election, election_id, with_for_update=True)
    assert election is not None
    result = dict(election.result or {})
    for key, n in deltas.items():
        result[key] = result.get(key, 0) + n
    election.result = result


def fake_finalize(session: Session, job: ElectionJob) -> None:
    _add(session, job.election_id, finalized=1)


def count_tally(ctx: ChunkContext) -> Outcome:
    chunk = ctx.chunk()
    job = ctx.read(lambda s: s.get(ElectionJob, ctx.claim.job_id))
    meta = job.metadata_ or {}
    if chunk.chunk_number in meta.get("poison", []):
        raise PoisonError(f"chunk {chunk.chunk_number} is poisoned")
    if chunk.chunk_number in meta.get("die", []) and ctx.claim.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the Ray worker process dies mid-chunk
    if chunk.chunk_number in meta.get("hang", []):
        time.sleep(3600)  # a call that never returns
    n = seq_sum = 0
    for ballot in ctx.stream_ballots(chunk):
        n += 1
        seq_sum += ballot.seq
    time.sleep(float(meta.get("sleep", 0)))

    def write(session: Session, task: ChunkTask, _job: ElectionJob) -> None:
        row = session.get(ElectionCenter, task.chunk_id)
        assert row is not None
        row.encrypted_tally = {"n": n, "seq_sum": seq_sum}
        _add(session, ctx.claim.election_id, ballots=n, chunks=1)

    return ctx.complete(write, fake_finalize)
