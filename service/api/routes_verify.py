"""VERIFY: check a decrypted election's whole record from the database, on the cluster."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import Caller, Ctx
from service.api.routes_jobs import CREATE_RESPONSES, created, job_options
from service.api.schemas import CreateVerify
from service.jobs import planning
from service.security.auth import require_election_access

router = APIRouter(prefix="/api", tags=["jobs"])


@router.post(
    "/verify/create",
    summary="Verify a decrypted election's record (every proof, the tally, clones) as a job",
    responses=CREATE_RESPONSES,
)
def create_verify(body: CreateVerify, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    """One task per ballot chunk of the election's tally and one for the header and the tally's shares;
    the verdict is in the job's status (``verification``) once it completes. Refused (409) before the
    election is decrypted or while another verify job of it is running."""
    require_election_access(caller, body.election_id)
    options = job_options(ctx, body)
    ctx.limiter.check(caller.subject)
    with ctx.tx() as s:
        job = planning.create_verify_job(s, body.election_id, caller.subject)
        options.apply(job)
        return created(job)
