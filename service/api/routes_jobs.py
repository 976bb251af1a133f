"""The four jobs (seed paths), job status, listing and re-drive."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from service.api.deps import Caller, Ctx
from service.api.errors import errors
from service.api.metrics import JOBS_CREATED
from service.api.schemas import CreateCombine, CreateDecryption, CreateTally, CreateVerify
from service.api.types import Id
from service.db.models import ElectionJob
from service.elections.decryption import start_decryption
from service.errors import NotFound
from service.jobs import callbacks, planning, status
from service.jobs.clock import db_now
from service.jobs.redrive import redrive_job
from service.security.auth import (
    can_see_job,
    require_acting_guardian,
    require_admin,
    require_election_access,
)

router = APIRouter(prefix="/api", tags=["jobs"])


CREATE_RESPONSES = errors(
    (
        422,
        "Malformed body, or a callback_url with a control or whitespace character, or outside the server's"
        " allow-list once its dot segments are resolved",
    )
)


def job_options(
    ctx: Ctx, body: CreateTally | CreateDecryption | CreateCombine | CreateVerify
) -> callbacks.JobOptions:
    """Checked before anything is written: a refused callback URL changes nothing."""
    return callbacks.JobOptions(body.priority, callbacks.check_url(ctx.settings, body.callback_url))


def created(job: ElectionJob) -> dict[str, Any]:
    JOBS_CREATED.labels(job.operation_type).inc()
    return {
        "jobId": str(job.job_id),
        "status": job.status,
        "totalChunks": job.total_chunks,
        "pollUrl": status.poll_url(job.job_id),
    }


@router.post(
    "/tally/create",
    summary="Plan the chunks of a closed election and start its tally",
    responses=CREATE_RESPONSES,
)
def create_tally(body: CreateTally, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    options = job_options(ctx, body)
    ctx.limiter.check(caller.subject)
    with ctx.tx() as s:
        job = planning.create_tally_job(
            s, body.election_id, body.chunk_size or ctx.settings.chunk_size, caller.subject
        )
        options.apply(job)  # in the job's transaction: no row is taken before it commits
        return created(job)


DECRYPTION_RESPONSES = errors(
    (403, "Wrong passphrase or damaged credential file, or not this caller's guardian"),
    (404, "No such election or guardian"),
    (409, "No completed tally yet, or the guardian already has a job"),
    (
        422,
        "The credential file is malformed, another guardian's, or asks for KDF parameters"
        " beyond the server's bounds (refused before any KDF work); or a callback_url with a control or"
        " whitespace character, or outside the server's allow-list once its dot segments are resolved",
    ),
    (
        503,
        "Every credential-opening (KDF) slot of this API process is busy, or the database is"
        " unreachable; nothing was changed: retry after the given seconds",
    ),
)


@router.post(
    "/decryption/create",
    summary="A guardian's partial decryption (and compensated shares for missing guardians)",
    responses=DECRYPTION_RESPONSES,
)
def create_decryption(body: CreateDecryption, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_acting_guardian(caller, body.election_id, body.guardian_id)
    options = job_options(ctx, body)
    ctx.limiter.check(caller.subject)
    # Not in ctx.tx(): start_decryption opens its own short transactions around the KDF.
    started = start_decryption(
        ctx.engine,
        ctx.server_secret,
        ctx.kdf_gate,
        election_id=body.election_id,
        guardian_id=body.guardian_id,
        credentials=body.credentials,
        passphrase=body.passphrase.get_secret_value(),
        missing_guardian_ids=body.missing_guardian_ids,
        created_by=caller.subject,
        sizes=planning.UnitSizes.from_settings(ctx.settings),
        options=options,
    )
    out: dict[str, Any] = created(started.partial_job) if started.partial_job else {"jobId": None}
    out["compensatedJobs"] = [
        {**created(j), "missingGuardianId": j.missing_guardian_id} for j in started.compensated_jobs
    ]
    return out


@router.post(
    "/combine/decryption",
    summary="Combine the shares once a quorum has decrypted",
    responses=CREATE_RESPONSES,
)
def create_combine(body: CreateCombine, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, body.election_id)
    options = job_options(ctx, body)
    ctx.limiter.check(caller.subject)
    with ctx.tx() as s:
        job = planning.create_combine_job(s, body.election_id, caller.subject)
        options.apply(job)
        return created(job)


def _visible_job(ctx: Ctx, caller: Caller, job_id: uuid.UUID) -> dict[str, Any]:
    with ctx.tx() as s:
        job = status.get_job(s, job_id)
        if not can_see_job(caller, job.created_by):
            # The same answer as a missing job: a caller learns nothing of others' job ids.
            raise NotFound(f"job {job_id} does not exist")
        return status.job_document(s, job, stuck_after=ctx.settings.stuck_after_seconds)


@router.get("/jobs/{job_id}/status", summary="Status, progress, timings and failed chunks of a job")
def job_status(job_id: uuid.UUID, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    return _visible_job(ctx, caller, job_id)


@router.get("/jobs", summary="Jobs (an election's, when given); a non-admin sees its own")
def list_jobs(
    ctx: Ctx, caller: Caller, election_id: Annotated[Id | None, Query()] = None
) -> list[dict[str, Any]]:
    with ctx.tx() as s:
        jobs = status.list_jobs(s, election_id, None if caller.is_admin else caller.subject)
        now, after = db_now(s), ctx.settings.stuck_after_seconds
        return [status.job_document(s, j, detail=False, stuck_after=after, now=now) for j in jobs]


@router.get("/decryption/status", summary="An election's decryption progress per guardian")
def decryption_status(ctx: Ctx, caller: Caller, election_id: Annotated[Id, Query()]) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return status.decryption_status(s, election_id)


@router.post("/jobs/{job_id}/redrive", summary="Put a job's FAILED chunks back to work")
def redrive(job_id: uuid.UUID, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    ctx.limiter.check(caller.subject)
    with ctx.tx() as s:
        n = redrive_job(s, job_id)
        job = status.get_job(s, job_id)
        s.flush()
        s.refresh(job)
        return {"jobId": str(job_id), "redriven": n, "status": job.status, "pollUrl": status.poll_url(job_id)}
