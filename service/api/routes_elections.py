"""Elections, guardians, ballots, results and the record: thin routes over service.elections."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, BackgroundTasks
from fastapi.responses import FileResponse
from sqlalchemy import select

from service.api.deps import Caller, Ctx
from service.api.errors import errors
from service.api.metrics import BALLOTS_ACCEPTED, BALLOTS_REJECTED
from service.api.schemas import (
    BulkBallots,
    ClaimCredentials,
    CreateElection,
    EncryptBallot,
    KeyCeremony,
    ReplaceManifest,
    SubmitBallot,
)
from service.api.types import BallotId, GuardianId, Id
from service.db.models import Ballot, Election
from service.elections import ballots as ballot_svc
from service.elections import challenge, crypto, custody, elections, results
from service.errors import DomainError, NotFound
from service.security.auth import Role, issue_token, require_admin, require_election_access

T = TypeVar("T")
router = APIRouter(prefix="/api/elections", tags=["elections"])


@router.post("", status_code=201, summary="Create an election from a manifest or a candidate list")
def create_election(body: CreateElection, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        e = elections.create_election(
            s,
            name=body.name,
            number_of_guardians=body.number_of_guardians,
            quorum=body.quorum,
            manifest=body.manifest,
            candidate_names=body.candidate_names,
            party_names=body.party_names,
            max_choices=body.max_choices,
            created_by=caller.subject,
        )
        return elections.summary(s, e)


@router.get("", summary="Elections (a guardian sees its own)")
def list_elections(ctx: Ctx, caller: Caller) -> list[dict[str, Any]]:
    with ctx.tx() as s:
        stmt = select(Election).order_by(Election.id)
        if not caller.is_admin:
            stmt = stmt.where(Election.id == caller.election_id)
        return [elections.summary(s, e) for e in s.scalars(stmt)]


@router.get("/{election_id}")
def get_election(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return elections.summary(s, elections.get_election(s, election_id))


@router.get("/{election_id}/manifest")
def get_manifest(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        e = elections.get_election(s, election_id)
        return {
            "manifest_version": e.manifest_version,
            "manifest_hash": e.manifest_hash,
            "manifest": e.manifest,
        }


@router.put("/{election_id}/manifest", summary="Replace the manifest (a new version; only before the keys)")
def replace_manifest(election_id: Id, body: ReplaceManifest, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        return elections.summary(s, elections.replace_manifest(s, election_id, body.manifest))


@router.get("/{election_id}/context")
def get_context(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        e = elections.get_election(s, election_id)
        if e.context is None:
            raise NotFound(f"election {election_id} has no context yet: run the key ceremony")
        return e.context


def _guardian_token(ctx: Ctx, election_id: int, guardian_id: str) -> str:
    return issue_token(
        ctx.settings,
        f"guardian:{election_id}:{guardian_id}",
        Role.GUARDIAN,
        election_id=election_id,
        guardian_id=guardian_id,
        key=ctx.jwt_key,
    )


@router.post(
    "/{election_id}/key-ceremony",
    summary="Run the custodial key ceremony: public data and each guardian's token only; every private"
    " record stays sealed under the server secret until its guardian claims it",
    responses=errors(
        (403, "the caller is not an admin"),
        (404, "the election does not exist"),
        (409, "the key ceremony has run, or the election is guardian-held"),
        (
            422,
            "a guardian id is unsafe or repeated, their number is not the election's, or the body carries"
            " passphrases (each guardian claims its file with its own passphrase instead)",
        ),
    ),
)
def key_ceremony(election_id: Id, body: KeyCeremony, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        made = elections.run_key_ceremony(s, election_id, list(body.guardian_ids), ctx.server_secret)
        e = elections.get_election(s, election_id)
        return {
            "election_id": election_id,
            "key_mode": e.key_mode,
            "context": e.context,
            "guardians": [
                {
                    "guardian_id": g.guardian_id,
                    "sequence_order": g.sequence_order,
                    "token": _guardian_token(ctx, election_id, g.guardian_id),
                    "claim_url": f"/api/elections/{election_id}/guardians/{g.guardian_id}/claim",
                }
                for g in made
            ],
        }


@router.post(
    "/{election_id}/guardians/{guardian_id}/claim",
    summary="A guardian takes its credential file out of the service's custody, once: sealed under its"
    " passphrase, for POST /api/decryption/create; the service's copy is erased",
    responses=errors(
        (403, "not this guardian's own token (another guardian's, another election's, or an admin's)"),
        (404, "the election does not exist, or the service holds no credential file of this guardian"),
        (409, "the held record does not open under this server's secret"),
        (410, "the file was claimed already: the reason says when"),
        (422, "the passphrase is shorter than 8 characters"),
        (503, "every KDF slot of this API process is busy: retry"),
    ),
)
def claim_credentials(
    election_id: Id, guardian_id: GuardianId, body: ClaimCredentials, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    claimed = custody.claim(
        ctx.engine,
        ctx.server_secret,
        ctx.kdf_gate,
        caller,
        election_id=election_id,
        guardian_id=guardian_id,
        passphrase=body.passphrase.get_secret_value(),
        kdf=ctx.kdf,
    )
    return {
        "election_id": claimed.election_id,
        "guardian_id": claimed.guardian_id,
        "claimed_at": claimed.claimed_at.isoformat(),
        "credentials": claimed.credentials,
    }


@router.post("/{election_id}/open")
def open_election(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        return elections.summary(s, elections.open_election(s, election_id))


@router.post("/{election_id}/close")
def close_election(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        return elections.summary(s, elections.close_election(s, election_id))


@router.get("/{election_id}/guardians", summary="Public guardian records")
def guardians(election_id: Id, ctx: Ctx, caller: Caller) -> list[dict[str, Any]]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        elections.get_election(s, election_id)
        return [g.public_record for g in elections.guardians_of(s, election_id)]


def _counted(fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except DomainError:
        BALLOTS_REJECTED.inc()
        raise


def _store(ctx: Ctx, election_id: int, prepared: list[ballot_svc.PreparedBallot]) -> list[dict[str, Any]]:
    with ctx.tx() as s:
        seqs = _counted(ballot_svc.store, s, election_id, prepared)
    for b in prepared:
        BALLOTS_ACCEPTED.labels("cast" if b.state == 1 else "spoiled").inc()
    return [ballot_svc.receipt(b, q) for b, q in zip(prepared, seqs, strict=True)]


@router.post("/{election_id}/ballots", status_code=201, summary="Submit one encrypted ballot (cast or spoil)")
def submit_ballot(election_id: Id, body: SubmitBallot, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        snap = ballot_svc.snapshot_for_ballots(s, election_id)
    prepared = _counted(
        ballot_svc.prepare_submitted, snap, body.ballot.as_json(), body.action
    )  # proofs, outside any tx
    return _store(ctx, election_id, [prepared])[0]


@router.post("/{election_id}/ballots/bulk", status_code=201, summary="Submit many ballots: all or none")
def submit_bulk(election_id: Id, body: BulkBallots, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        snap = ballot_svc.snapshot_for_ballots(s, election_id)
    prepared = _counted(ballot_svc.prepare_bulk, snap, [(b.ballot.as_json(), b.action) for b in body.ballots])
    receipts = _store(ctx, election_id, prepared)
    return {"accepted": len(receipts), "ballots": receipts}


_DECISION_ERRORS = (
    (401, "no or a bad bearer token"),
    (403, "the caller is not an admin"),
    (404, "the election does not exist, or the ballot is not pending on this API process: encrypt it again"),
    (409, "the election is not open, or the ballot id is already submitted"),
)


@router.post(
    "/{election_id}/ballots/encrypt",
    status_code=201,
    summary="Encrypt a plaintext ballot: cast it, spoil it (its nonce returned), or hold it for the voter",
    responses=errors(
        *_DECISION_ERRORS[:2],
        (404, "the election does not exist"),
        (409, "the election is not open, or the ballot id is already submitted or pending"),
        (422, "the plaintext is malformed, repeats a contest or selection, or does not fit the manifest"),
        (429, "this API process holds as many pending ballots as it may"),
    ),
)
def encrypt_ballot(election_id: Id, body: EncryptBallot, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        snap = ballot_svc.snapshot_for_ballots(s, election_id)
    encryption = _counted(ballot_svc.prepare_plaintext, snap, body.ballot.as_json())
    if body.action == "pending":
        with ctx.tx() as s:
            return _counted(challenge.hold, s, ctx.pending, election_id, encryption)
    receipt = _store(ctx, election_id, [ballot_svc.decide(encryption, body.action)])[0]
    return challenge.response(receipt, encryption)


def _decide(ctx: Ctx, election_id: int, ballot_id: str, action: str) -> dict[str, Any]:
    with ctx.tx() as s:
        encryption = _counted(challenge.take, s, ctx.pending, election_id, ballot_id)
    receipt = _store(ctx, election_id, [ballot_svc.decide(encryption, action)])[0]
    return challenge.response(receipt, encryption)


@router.post(
    "/{election_id}/ballots/{ballot_id}/cast",
    status_code=201,
    summary="Cast a pending ballot; its nonce is dropped, never returned or stored",
    responses=errors(*_DECISION_ERRORS),
)
def cast_pending(election_id: Id, ballot_id: BallotId, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    return _decide(ctx, election_id, ballot_id, "cast")


@router.post(
    "/{election_id}/ballots/{ballot_id}/challenge",
    status_code=201,
    summary="Challenge a pending ballot: stored as spoiled, then its nonce and plaintext are returned",
    responses=errors(*_DECISION_ERRORS),
)
def challenge_pending(election_id: Id, ballot_id: BallotId, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    return _decide(ctx, election_id, ballot_id, "spoil")


@router.get("/{election_id}/ballots/{ballot_id}", summary="A submitted ballot (the reference's JSON)")
def get_ballot(election_id: Id, ballot_id: BallotId, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        payload = s.scalar(
            select(Ballot.payload).where(Ballot.election_id == election_id, Ballot.object_id == ballot_id)
        )
    if payload is None:
        raise NotFound(f"ballot {ballot_id} is not in election {election_id}")
    return crypto.decode(payload).to_json()


@router.get("/{election_id}/results", summary="Counts per contest and selection, spoiled ballots, chunks")
def election_results(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return results.results(s, election_id)


@router.get(
    "/{election_id}/record",
    summary="The election record (reference layout) as a zip",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}}},
)
def election_record(election_id: Id, ctx: Ctx, caller: Caller, background: BackgroundTasks) -> FileResponse:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        path = results.record_zip_file(s, election_id)
    background.add_task(Path(path).unlink, missing_ok=True)
    return FileResponse(path, media_type="application/zip", filename=f"election_{election_id}_record.zip")
