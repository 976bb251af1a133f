"""VERIFY jobs: where each task's report lives (``verify_report``), and the verdict the finalizer makes.

This module alone writes and reads ``verify_report``. A verify task (``bridge/tasks/verify.py``) checks
its unit with ``compute.verify.RecordCheck`` and writes its ``ChunkReport`` here, in the transaction that
marks the task DONE (``write_report``). When the last task lands, ``store_verdict`` (called by
``service.jobs.finalize`` under the job's lock) closes the reports with ``compute.verify.Summary``, the
closing ``amarvote record verify`` uses too (the reports streamed a few rows at a time, added up in
``Totals``; then ``RecordCheck.finish``: the clone check, the encrypted tally against the product of the
cast ballots, stray decryptions, the Lagrange coefficients) and stores the verdict on the job
(``metadata.verification``), which the job's status shows under ``verification``. The job's units are
the election row (position 0 in the verdict: the guardians, the context and the tally's shares) and the
completed tally's chunks, each checked against the ballot count its tally chunk counted.

A problem found is a COMPLETED job whose verdict says ``verified: false`` (the check ran and found it);
a task that raises is retried and fails like any other task. Everything here is public data (the
record anyone may download): no verify task or finalizer reads a secret or an escrow.

Memory: the finalizer holds the header, one report at a time, the running products and 8 bytes per
selection ciphertext (``Totals``); the ballots are read again, in batches, only when a fingerprint prefix
repeats.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db.models import (
    Ballot,
    BallotState,
    ChunkKind,
    ElectionCenter,
    ElectionJob,
    VerifyReport,
)
from service.elections.results import decoded_ballots, decrypted_spoiled_ids

LISTED = 100  # problems and failed ballots kept in the verdict (the counts are complete)
REPORT_ROWS = 4  # reports decoded at a time by the finalizer


class VerifyError(RuntimeError):
    """The job's reports are not what its tasks should have written (a finalizer error: retried)."""


def write_report(session: Session, job_id: uuid.UUID, chunk_id: int, report: Any) -> None:
    """Store one task's ``compute.verify.ChunkReport`` (the caller marks the task DONE in this
    transaction)."""
    from compute.group import to_hex

    session.add(
        VerifyReport(
            job_id=job_id,
            chunk_id=chunk_id,
            ballots=report.ballots,
            cast_count=report.cast,
            spoiled_count=report.spoiled,
            problems=list(report.problems),
            products=[
                [cid, sid, to_hex(pad), to_hex(data)] for (cid, sid), (pad, data) in report.products.items()
            ],
            prefixes=bytes(report.prefixes),
            available_sets=sorted(sorted(ids) for ids in report.available_sets),
            failed_ballots=list(report.failed_ballots),
        )
    )


def _report_of(row: VerifyReport) -> Any:
    from compute.group import from_hex
    from compute.verify import ChunkReport

    return ChunkReport(
        ballots=row.ballots,
        cast=row.cast_count,
        spoiled=row.spoiled_count,
        problems=list(row.problems),
        products={(c, s): (from_hex(pad), from_hex(data)) for c, s, pad, data in row.products},
        prefixes=bytes(row.prefixes),
        available_sets={frozenset(ids) for ids in row.available_sets},
        failed_ballots=list(row.failed_ballots),
    )


def reports(session: Session, job_id: uuid.UUID) -> Iterator[tuple[str, int, Any]]:
    """(unit kind, unit number, ChunkReport) of every task of the job: the election row first, then the
    chunks in order; a few rows decoded at a time."""
    stmt = (
        select(ElectionCenter.kind, ElectionCenter.chunk_number, VerifyReport)
        .join(ElectionCenter, ElectionCenter.id == VerifyReport.chunk_id)
        .where(VerifyReport.job_id == job_id)
        .order_by(ElectionCenter.kind != ChunkKind.ELECTION.value, ElectionCenter.chunk_number)
        .execution_options(yield_per=REPORT_ROWS)
    )
    for kind, number, row in session.execute(stmt):
        yield kind, number, _report_of(row)
        session.expunge(row)


def stray_decryptions(session: Session, election_id: int) -> list[str]:
    """Ids with a decryption that are no spoiled ballot of the election (none, or cast)."""
    ids = decrypted_spoiled_ids(session, election_id)
    spoiled: set[str] = set()
    for i in range(0, len(ids), 1000):
        spoiled.update(
            session.scalars(
                select(Ballot.object_id).where(
                    Ballot.election_id == election_id,
                    Ballot.state == int(BallotState.SPOILED),
                    Ballot.object_id.in_(ids[i : i + 1000]),
                )
            )
        )
    return sorted(set(ids) - spoiled)


SHARED_CODES_LISTED = 100


def shared_codes(session: Session, election_id: int) -> list[str]:
    """Each pair of the election's ballots that share a tracking code, named. The reports carry no code
    prefixes (``verify_report`` has no column for them), so the database groups the stored codes instead;
    only the repeated ones come back."""
    codes = session.scalars(
        select(Ballot.code)
        .where(Ballot.election_id == election_id)
        .group_by(Ballot.code)
        .having(func.count() > 1)
        .order_by(Ballot.code)
        .limit(SHARED_CODES_LISTED)
    ).all()
    problems = []
    for code in codes:
        first, *others = session.scalars(
            select(Ballot.object_id)
            .where(Ballot.election_id == election_id, Ballot.code == code)
            .order_by(Ballot.seq)
        ).all()
        problems += [f"ballots {first} and {other} share the tracking code {code}" for other in others]
    return problems


def record_check(session: Session, election_id: int) -> Any:
    """The ``compute.verify.RecordCheck`` of the election's record as the database holds it (the same
    header the export writes: ``service.elections.results.header_files``)."""
    from compute.record import header_from_files
    from compute.verify import RecordCheck
    from service.elections.results import header_files

    return RecordCheck(header_from_files(header_files(session, election_id)))


ELECTION_UNIT = "the election (guardians, context, the tally's shares)"


def store_verdict(session: Session, job: ElectionJob) -> None:
    """The verdict of a VERIFY job whose every task is DONE: stored in ``job.metadata_["verification"]``.
    The reports are closed by ``compute.verify.Summary``, as ``record verify`` closes its units': the
    election row's first, then the chunks in order."""
    from compute.verify import HEADER_POSITION, Summary

    check = record_check(session, job.election_id)
    summary = Summary(check, listed=LISTED)
    seen = 0
    for kind, number, report in reports(session, job.job_id):
        seen += 1
        chunk = kind == ChunkKind.CHUNK.value
        summary.add(
            number if chunk else HEADER_POSITION, report, f"chunk {number}" if chunk else ELECTION_UNIT, chunk
        )
    if seen != job.total_chunks:
        raise VerifyError(f"verify job {job.job_id}: {seen} reports for {job.total_chunks} tasks")
    summary.close(
        stray_decryptions(session, job.election_id),
        lambda: decoded_ballots(session, job.election_id),
        lambda: shared_codes(session, job.election_id),
    )
    verdict = {
        "verified": summary.problem_count == 0,
        "ballots": summary.totals.ballots,
        "cast": summary.totals.cast,
        "spoiled": summary.totals.spoiled,
        "guardians": len(check.header.guardians),
        "chunks": summary.chunks,
        "problem_count": summary.problem_count,
        "problems": summary.problems,
        "chunks_with_problems": summary.chunks_with_problems,
        "failed_ballot_count": summary.failed_ballot_count,
        "failed_ballots": summary.failed_ballots,
    }
    job.metadata_ = {**(job.metadata_ or {}), "verification": verdict}


def verdict_of(job: ElectionJob) -> dict[str, Any] | None:
    """The stored verdict (None until the job completes)."""
    found = (job.metadata_ or {}).get("verification")
    return dict(found) if isinstance(found, dict) else None
