"""PARTIAL_DECRYPTION and COMPENSATED_DECRYPTION of one decryption unit.

A unit is a slice of the aggregate tally's selections or a run of spoiled ballots
(``service.jobs.planning.ensure_decryption_units``); a tally chunk is refused (``NotDecryptable``). The
guardian's share, with Chaum-Pedersen proofs, is written as one ``decryption_share`` (or
``compensated_share``) row by ``service.elections.shares``, which owns both tables: the reference's share
JSON of the slice, or ``{"spoiled_ballots": {ballot id: share JSON}}``. The job's key material comes
from its own escrow: the secret key alone for a partial job, the one backup coordinate for a compensated
job.
"""

from __future__ import annotations

from typing import Any

from bridge.tasks import ChunkContext
from bridge.tasks.common import (
    decryption_targets,
    election_context,
    election_data,
    escrowed_key,
    guardian_records,
    job_of,
)
from service.elections.shares import write_compensated_share, write_share
from service.jobs.transitions import Outcome


def _document(tally_share: Any, ballots: list[Any], ballot_shares: list[Any]) -> dict[str, Any]:
    if tally_share is not None:
        return dict(tally_share.to_json())
    return {
        "spoiled_ballots": {b.object_id: s.to_json() for b, s in zip(ballots, ballot_shares, strict=True)}
    }


def run_partial(ctx: ChunkContext) -> Outcome:
    from compute.decryption import compute_decryption_shares
    from compute.guardian import DecryptionKey

    unit = ctx.chunk()
    tally, ballots = decryption_targets(ctx, unit)
    job = job_of(ctx)
    context = election_context(election_data(ctx))
    key = escrowed_key(ctx, job)
    if not isinstance(key, DecryptionKey):
        raise LookupError(f"job {job.job_id}'s escrow does not hold a decryption key")
    shares = compute_decryption_shares(key, [tally] if tally is not None else ballots, context, workers=1)
    del key
    share = _document(shares[0] if tally is not None else None, ballots, shares)

    return ctx.complete(lambda session, task, job: write_share(session, job, task.chunk_id, share))


def run_compensated(ctx: ChunkContext) -> Outcome:
    from compute.decryption import compensated_shares_from_key
    from compute.guardian import CompensationKey

    unit = ctx.chunk()
    tally, ballots = decryption_targets(ctx, unit)
    job = job_of(ctx)
    context = election_context(election_data(ctx))
    if job.missing_guardian_id is None:
        raise LookupError(f"job {job.job_id} names no missing guardian")
    missing = guardian_records(ctx)[job.missing_guardian_id]
    key = escrowed_key(ctx, job)
    if not isinstance(key, CompensationKey):
        raise LookupError(f"job {job.job_id}'s escrow does not hold a compensation key")
    shares = compensated_shares_from_key(
        key, missing, [tally] if tally is not None else ballots, context, workers=1
    )
    del key
    share = _document(shares[0] if tally is not None else None, ballots, shares)

    return ctx.complete(
        lambda session, task, job: write_compensated_share(session, job, task.chunk_id, share)
    )
