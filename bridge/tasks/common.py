"""What every real body loads besides its chunk: the election's manifest and context, guardians, keys.

All of it is read from the database by the worker itself; none of it travels in a message or a Ray
argument. Key material is unsealed from the job's own ``guardian_key_escrow`` row with the server secret of
the worker's own settings, ``ctx.settings`` (``AMARVOTE_SERVER_SECRET`` on cluster nodes; the data
directory's secret file locally).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge.tasks import ChunkContext
from service.db.models import BallotState, ChunkKind, Election, ElectionCenter, ElectionJob, Guardian


@dataclass(frozen=True, slots=True)
class ElectionData:
    election_id: int
    manifest: dict[str, Any]
    context: dict[str, Any]


def election_data(ctx: ChunkContext) -> ElectionData:
    def read(s: Session) -> ElectionData:
        e = s.get(Election, ctx.claim.election_id)
        if e is None or e.context is None:
            raise LookupError(f"election {ctx.claim.election_id} has no context (no key ceremony)")
        return ElectionData(e.id, e.manifest, e.context)

    return ctx.read(read)


def internal_manifest(data: ElectionData) -> Any:
    from service.elections.crypto import internal_manifest as cached

    return cached(data.manifest)


def election_context(data: ElectionData) -> Any:
    from compute.context import ElectionContext

    return ElectionContext.from_json(data.context)


def job_of(ctx: ChunkContext) -> ElectionJob:
    return ctx.read(lambda s: s.get(ElectionJob, ctx.claim.job_id))


def guardian_records(ctx: ChunkContext) -> dict[str, Any]:
    """guardian id -> compute GuardianRecord (public)."""
    from compute.guardian import GuardianRecord

    rows = ctx.read(
        lambda s: list(
            s.scalars(
                select(Guardian)
                .where(Guardian.election_id == ctx.claim.election_id)
                .order_by(Guardian.sequence_order)
            )
        )
    )
    return {g.guardian_id: GuardianRecord.from_json(g.public_record) for g in rows}


def escrowed_key(ctx: ChunkContext, job: ElectionJob) -> Any:
    """The job's own key material from its escrow (never logged or returned): a DecryptionKey for a
    partial job, the CompensationKey of its one missing guardian for a compensated job."""
    from service.elections.escrow import load_key
    from service.security.secrets import server_secret

    secret = server_secret(ctx.settings)
    return ctx.read(lambda s: load_key(s, job.job_id, secret))


class NotDecryptable(ValueError):
    """A decryption task was asked for a tally chunk or the election row: only the aggregate's slices and
    spoiled ballots are ever decrypted (a chunk's sub-tally would publish its voters' votes)."""


def decryption_targets(ctx: ChunkContext, unit: ElectionCenter) -> tuple[Any | None, list[Any]]:
    """(the aggregate slice, None for a spoiled run) and (the spoiled ballots, empty for a slice)."""
    from compute.tally import CiphertextTally

    if unit.kind == ChunkKind.SLICE.value:
        if unit.encrypted_tally is None:
            raise LookupError(f"aggregate slice {unit.chunk_number} has no ciphertexts")
        return CiphertextTally.from_json(unit.encrypted_tally), []
    if unit.kind == ChunkKind.SPOILED.value:
        return None, spoiled_ballots(ctx, unit)
    raise NotDecryptable(
        f"{unit.kind} {unit.chunk_number} is not decrypted: only the aggregate and spoiled ballots are"
    )


def spoiled_ballots(ctx: ChunkContext, unit: ElectionCenter) -> list[Any]:
    """The spoiled ballots of a ``spoiled`` unit, decoded (cast ballots in its range stay in the database)."""
    from compute.ballot import decode_submitted_ballot

    spoiled = int(BallotState.SPOILED)
    found = [decode_submitted_ballot(b.payload) for b in ctx.stream_ballots(unit, spoiled)]
    if len(found) != unit.ballot_count:
        raise LookupError(
            f"spoiled ballots {unit.chunk_number}: {len(found)} found, {unit.ballot_count} planned"
        )
    return found
