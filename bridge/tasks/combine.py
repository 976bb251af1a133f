"""COMBINE_DECRYPTION of one decryption unit: plaintexts from the guardians' shares.

The available guardians' shares are read from ``decryption_share`` (``service.elections.shares``); each
missing guardian's share is reconstructed from the available guardians' compensated shares with Lagrange
coefficients. Every proof is checked (``combine_shares(verify=True)``) before anything is decrypted. A
slice's result is the reference's PlaintextTally JSON of its selections of the aggregate; a spoiled run's
is ``{"spoiled_ballots": {ballot id: PlaintextTally JSON}, "spoiled_counts": {ballot id: votes}}``,
written by ``service.elections.results.write_unit_result``. The finalizer merges the slices into the
election's tally. A tally chunk has no shares and is never combined.
"""

from __future__ import annotations

from typing import Any

from bridge.tasks import ChunkContext
from bridge.tasks.common import (
    decryption_targets,
    election_context,
    election_data,
    guardian_records,
    internal_manifest,
    job_of,
)
from service.db.models import ElectionCenter
from service.elections.results import counts_of, write_unit_result
from service.elections.shares import unit_shares
from service.jobs.transitions import Outcome


def _decrypt(
    target: Any,
    direct: dict[str, Any],
    compensated: dict[str, dict[str, Any]],
    guardians: dict[str, Any],
    lagrange: dict[str, Any],
    context: Any,
    manifest: Any,
) -> dict[str, Any]:
    """direct: guardian -> share JSON; compensated: missing -> {available guardian -> share JSON}."""
    from compute.decrypt_with_shares import combine_shares
    from compute.decryption import reconstruct_decryption_share
    from compute.decryption_share import CompensatedDecryptionShare
    from compute.decryption_share import DecryptionShare as Share

    shares = {g: Share.from_json(s) for g, s in direct.items()}
    for missing, parts in compensated.items():
        shares[missing] = reconstruct_decryption_share(
            guardians[missing],
            target,
            {g: CompensatedDecryptionShare.from_json(s) for g, s in parts.items()},
            lagrange,
        )
    # Every proof is checked against the guardians' public records (recovery keys of the
    # compensated parts from the missing guardian's commitments) before anything is decrypted.
    return combine_shares(target, shares, list(guardians.values()), context, manifest).to_json()


def run(ctx: ChunkContext) -> Outcome:
    from compute.decryption import compute_lagrange_coefficients

    unit: ElectionCenter = ctx.chunk()
    tally, ballots = decryption_targets(ctx, unit)
    job = job_of(ctx)
    meta = job.metadata_ or {}
    available: list[str] = list(meta["available_guardian_ids"])
    missing: list[str] = list(meta.get("missing_guardian_ids") or [])
    data = election_data(ctx)
    context, manifest = election_context(data), internal_manifest(data).manifest
    guardians = guardian_records(ctx)
    lagrange = compute_lagrange_coefficients((g, guardians[g].sequence_order) for g in available)

    direct, comp = ctx.read(lambda s: unit_shares(s, unit.id, available, missing))
    if set(direct) != set(available) or any(set(p) != set(available) for p in comp.values()):
        raise LookupError(f"{unit.kind} {unit.chunk_number}: shares are incomplete for the combine")

    if tally is not None:
        result = _decrypt(tally, direct, comp, guardians, lagrange, context, manifest)
    else:

        def of(share: dict[str, Any], ballot_id: str) -> dict[str, Any]:
            found = (share.get("spoiled_ballots") or {}).get(ballot_id)
            if found is None:
                raise LookupError(f"spoiled ballots {unit.chunk_number}: no share of ballot {ballot_id}")
            return found

        result = {
            "spoiled_ballots": {
                b.object_id: _decrypt(
                    b,
                    {g: of(s, b.object_id) for g, s in direct.items()},
                    {m: {g: of(s, b.object_id) for g, s in parts.items()} for m, parts in comp.items()},
                    guardians,
                    lagrange,
                    context,
                    manifest,
                )
                for b in ballots
            }
        }
        # Kept beside them for the results (a few hundred bytes a ballot against 300 KB).
        result["spoiled_counts"] = {bid: counts_of(t) for bid, t in result["spoiled_ballots"].items()}

    return ctx.complete(lambda session, task, _job: write_unit_result(session, task.chunk_id, result))
