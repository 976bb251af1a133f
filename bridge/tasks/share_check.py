"""PARTIAL_DECRYPTION and COMPENSATED_DECRYPTION of one decryption unit, for shares a guardian computed on
its own machine and uploaded (jobs flagged ``metadata.shares = "uploaded"``: ``Claim.variant``).

Nothing is computed from a key: the body reads the unit's staged document (``share_upload``, through
``service.elections.uploads``), checks that it covers exactly the unit's selections (a slice) or ballots
(a spoiled run) and every Chaum-Pedersen proof, against the guardian's public key or, for a compensated
share, the recovery key g^P_j(l) computed from the missing guardian's published commitments
(``compute.uploaded_shares.check_unit_share``), then writes the ``decryption_share`` /
``compensated_share`` row with ``service.elections.shares``, as ``bridge/tasks/decryption.py`` does, and
erases the staged document,
in the transaction that marks the task DONE. So combine, results, the record and the verify job read
what they always read.

A document that fails is a permanent failure (``ShareRejected``, a ``PermanentFailure``): the task is
FAILED at its first attempt (a retry would read the same document), naming guardian, unit, contest and
selection, and nothing is written. The guardian uploads the unit again, which re-drives the task.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from bridge.tasks import ChunkContext
from bridge.tasks.common import (
    decryption_targets,
    election_context,
    election_data,
    guardian_records,
    job_of,
)
from service.db.models import ChunkKind, ChunkTask, ElectionJob
from service.elections import uploads
from service.elections.shares import write_compensated_share, write_share
from service.jobs.transitions import Outcome, PermanentFailure


class ShareRejected(PermanentFailure):
    """An uploaded share that is not the unit's or whose proofs fail: no retry changes it."""


def _check(ctx: ChunkContext, missing_id: str | None) -> tuple[ElectionJob, dict[str, Any]]:
    from compute.decryption_target import target_of
    from compute.uploaded_shares import check_unit_share

    unit = ctx.chunk()
    job = job_of(ctx)
    guardian_id = job.guardian_id or ""
    label = uploads.unit_label(unit)
    doc = ctx.read(lambda s: uploads.staged_document(s, unit.id, guardian_id, missing_id))
    if doc is None:
        raise ShareRejected(
            f"guardian {guardian_id}: {label}: no uploaded share"
            + (f" for missing guardian {missing_id}" if missing_id else "")
            + " is staged; upload the unit again"
        )
    # What the escrowed bodies decrypt, loaded as they load it (a tally chunk refused, ballots streamed).
    tally, ballots = decryption_targets(ctx, unit)
    targets = [tally] if tally is not None else ballots
    context = election_context(election_data(ctx))
    records = guardian_records(ctx)
    result = check_unit_share(
        doc,
        [target_of(t) for t in targets],
        context.crypto_extended_base_hash,
        spoiled=unit.kind == ChunkKind.SPOILED.value,
        unit_label=label,
        guardian=records[guardian_id],
        missing=records[missing_id] if missing_id else None,
    )
    if result.problems or result.document is None:
        shown = "; ".join(result.problems[:5])
        more = f" (+{len(result.problems) - 5} more)" if len(result.problems) > 5 else ""
        raise ShareRejected(f"uploaded share refused: {shown}{more}")
    return job, result.document


def run_partial(ctx: ChunkContext) -> Outcome:
    _job, share = _check(ctx, None)

    def write(session: Session, task: ChunkTask, job: ElectionJob) -> None:
        write_share(session, job, task.chunk_id, share)
        uploads.erase_staged(session, task.chunk_id, job.guardian_id or "", None)

    return ctx.complete(write)


def run_compensated(ctx: ChunkContext) -> Outcome:
    job = job_of(ctx)
    if job.missing_guardian_id is None:
        raise LookupError(f"job {job.job_id} names no missing guardian")
    _job, share = _check(ctx, job.missing_guardian_id)

    def write(session: Session, task: ChunkTask, job: ElectionJob) -> None:
        write_compensated_share(session, job, task.chunk_id, share)
        uploads.erase_staged(session, task.chunk_id, job.guardian_id or "", job.missing_guardian_id)

    return ctx.complete(write)
