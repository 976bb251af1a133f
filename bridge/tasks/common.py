"""What every real body loads besides its chunk: the election's manifest and context, guardians, keys.

All of it is read from the database by the worker itself; none of it travels in a message or a Ray
argument. Key material is unsealed from ``guardian_key_escrow`` with the server secret of the worker's
own settings (``AMARVOTE_SERVER_SECRET`` on cluster nodes; the data directory's secret file locally).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from bridge.tasks import ChunkContext
from service.db.models import Ballot, BallotState, Election, ElectionCenter, ElectionJob, Guardian


@dataclass(frozen=True, slots=True)
class ElectionData:
    election_id: int
    manifest: dict[str, Any]
    context: dict[str, Any]


def election_data(ctx: ChunkContext) -> ElectionData:
    def read(s):  # type: ignore[no-untyped-def]
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


def private_guardian(ctx: ChunkContext, job: ElectionJob) -> Any:
    """The guardian's private record from the escrow the job references (never logged or returned)."""
    from compute.guardian import PrivateGuardianRecord
    from service.db.models import GuardianKeyEscrow
    from service.elections.escrow import load_escrow
    from service.security.secrets import server_secret
    from service.settings import get_settings

    secret = server_secret(get_settings())
    escrow_id = (job.metadata_ or {}).get("escrow_id")

    def read(s):  # type: ignore[no-untyped-def]
        if escrow_id and s.get(GuardianKeyEscrow, uuid.UUID(str(escrow_id))) is not None:
            return load_escrow(s, escrow_id, secret)
        # Re-sealed under a new id since the job was planned (a later request for the same guardian).
        row = s.scalars(
            select(GuardianKeyEscrow).where(
                GuardianKeyEscrow.election_id == job.election_id,
                GuardianKeyEscrow.guardian_id == job.guardian_id,
            )
        ).one_or_none()
        if row is None:
            raise LookupError(f"no key escrow for guardian {job.guardian_id} (erased?)")
        return load_escrow(s, row.id, secret)

    return PrivateGuardianRecord.from_json(ctx.read(read))


def spoiled_ballots(ctx: ChunkContext, chunk: ElectionCenter) -> list[Any]:
    """The chunk's spoiled ballots, decoded (streamed: only spoiled ones are kept)."""
    from compute.ballot import decode_submitted_ballot

    if chunk.kind != "chunk":
        return []  # the election row decrypts the tally only; spoiled ballots go chunk by chunk
    return [
        decode_submitted_ballot(b.payload)
        for b in ctx.stream_ballots(chunk)
        if b.state == BallotState.SPOILED
    ]


def ballots_by_id(ctx: ChunkContext, chunk: ElectionCenter, ids: set[str]) -> dict[str, Any]:
    from compute.ballot import decode_submitted_ballot

    if not ids:
        return {}

    def read(s):  # type: ignore[no-untyped-def]
        return list(
            s.scalars(
                select(Ballot.payload).where(
                    Ballot.election_id == chunk.election_id, Ballot.object_id.in_(sorted(ids))
                )
            )
        )

    decoded = [decode_submitted_ballot(p) for p in ctx.read(read)]
    return {b.object_id: b for b in decoded}
