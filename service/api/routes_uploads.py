"""Guardian-held decryption: what a guardian needs to compute its shares on its own machine, the admin's
declaration of the missing guardians, and the upload of shares (thin routes over
``service.elections.uploads``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.api.deps import Caller, Ctx
from service.api.errors import errors
from service.api.routes_jobs import created
from service.api.schemas import DeclareMissing, SubmitShares, UploadUnitShares
from service.api.types import GuardianId, Id
from service.elections import uploads
from service.errors import Conflict
from service.jobs import callbacks, planning, queries
from service.security.auth import require_acting_guardian, require_admin, require_election_access

router = APIRouter(prefix="/api/elections", tags=["guardian-held decryption"])

Seq = Annotated[
    int, Query(ge=0, lt=2**63, description="The last seq of the previous page (0: from the start)")
]
Limit = Annotated[int, Query(ge=1, le=uploads.MAX_PAGE)]


@router.post(
    "/{election_id}/missing-guardians",
    summary="Declare, once, the guardians that will not decrypt (after the tally, before any share)",
    responses=errors((409, "No completed tally, more than n - quorum, or shares or jobs exist already")),
)
def declare_missing(election_id: Id, body: DeclareMissing, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        return uploads.declare_missing(
            s, election_id, body.guardian_ids, planning.UnitSizes.from_settings(ctx.settings)
        )


@router.get("/{election_id}/missing-guardians", summary="The declared missing guardians")
def missing_guardians(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return uploads.missing_guardians(s, election_id)


@router.get(
    "/{election_id}/decryption-units",
    summary="The tally's decryption units (planned on first use) and the declared missing guardians",
)
def decryption_units(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return uploads.list_units(s, election_id, planning.UnitSizes.from_settings(ctx.settings))


@router.get(
    "/{election_id}/decryption-units/{unit_id}",
    summary="What one unit decrypts: a slice's ciphertexts, or a spoiled run's ballots (Target JSON)",
)
def decryption_unit(election_id: Id, unit_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return uploads.unit_targets(s, election_id, unit_id)


@router.get(
    "/{election_id}/cast-ciphertexts",
    summary="The cast ballots' selection ciphertexts, a page at a time in seq order (spoiled ones excluded)",
)
def cast_ciphertexts(
    election_id: Id, ctx: Ctx, caller: Caller, after: Seq = 0, limit: Limit = 500
) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return uploads.cast_ciphertexts(s, election_id, after, limit)


@router.get(
    "/{election_id}/spoiled-ballots", summary="The spoiled ballots' ids, a page at a time in seq order"
)
def spoiled_ballots(
    election_id: Id, ctx: Ctx, caller: Caller, after: Seq = 0, limit: Limit = 500
) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return uploads.spoiled_ballots(s, election_id, after, limit)


@router.get(
    "/{election_id}/encrypted-tally",
    summary="The aggregate encrypted tally (the reference's CiphertextTally JSON)",
    responses=errors((409, "Not tallied yet")),
)
def encrypted_tally(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        election = queries.load_election(s, election_id)
        if election.encrypted_tally is None:
            raise Conflict(f"election {election_id} has no encrypted tally yet")
        return election.encrypted_tally


@router.put(
    "/{election_id}/guardians/{guardian_id}/shares/{unit_id}",
    summary="Upload one unit's shares of a guardian (its own and one per declared missing guardian)",
    responses=errors(
        (
            409,
            "The guardian was declared missing, decrypts with an escrowed key, or this unit is being checked",
        ),
        (422, "A share that is not exactly the unit's, or compensated shares for other guardians"),
    ),
)
def upload_unit(
    election_id: Id, guardian_id: GuardianId, unit_id: Id, body: UploadUnitShares, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    require_acting_guardian(caller, election_id, guardian_id)
    with ctx.tx() as s:
        return uploads.stage_unit(
            s, election_id, guardian_id, unit_id, body.share, body.compensated
        ).to_json()


@router.post(
    "/{election_id}/guardians/{guardian_id}/shares/submit",
    summary="Turn a guardian's uploaded units into its decryption jobs (its shares checked on the cluster)",
    responses=errors(
        (409, "The guardian was declared missing, decrypts with an escrowed key, or submitted already"),
        (422, "A unit lacks a document; or a callback_url the allow-list refuses"),
    ),
)
def submit_shares(
    election_id: Id, guardian_id: GuardianId, body: SubmitShares, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    require_acting_guardian(caller, election_id, guardian_id)
    options = callbacks.JobOptions(body.priority, callbacks.check_url(ctx.settings, body.callback_url))
    ctx.limiter.check(caller.subject)
    with ctx.tx() as s:
        done = uploads.submit(
            s,
            election_id,
            guardian_id,
            caller.subject,
            planning.UnitSizes.from_settings(ctx.settings),
            options,
        )
        out = created(done.partial_job)
        out["compensatedJobs"] = [
            {**created(j), "missingGuardianId": j.missing_guardian_id} for j in done.compensated_jobs
        ]
        return out
