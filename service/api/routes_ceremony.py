"""The guardian-held key ceremony: thin routes over ``service.elections.ceremony``.

The admin starts it and hands each guardian its token; every later write is the guardian's own, with
its own token (an admin cannot act for a guardian here). Everything posted is public data: keys with
proofs, backups encrypted to their receivers, verifications, confirmations.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.api.deps import Caller, Ctx
from service.api.errors import errors
from service.api.schemas_ceremony import (
    CeremonyStatus,
    ConfirmationJson,
    ElectionPublicKeyJson,
    PostBackups,
    PostVerifications,
    StartCeremony,
    StartedCeremony,
)
from service.api.types import GuardianId, Id
from service.elections import ceremony
from service.security.auth import (
    Role,
    issue_token,
    require_admin,
    require_election_access,
    require_own_guardian,
)

router = APIRouter(prefix="/api/elections", tags=["key ceremony"])

_AUTH = ((401, "no or a bad bearer token"),)
_OWN = (403, "not this guardian's own token (another guardian's, another election's, or an admin's)")
_SEE = (403, "a guardian token of another election")
_NO_CEREMONY = (404, "the election does not exist, has no guardian-held ceremony, or no such guardian slot")


def _status(ctx: Ctx, election_id: int, caller: Any) -> dict[str, Any]:
    with ctx.tx() as s:
        return ceremony.status(s, election_id, None if caller.is_admin else caller.guardian_id)


@router.post(
    "/{election_id}/ceremony",
    status_code=201,
    response_model=StartedCeremony,
    summary="Start a guardian-held key ceremony: one token per guardian, no secret made or seen here",
    responses=errors(
        *_AUTH,
        (403, "the caller is not an admin"),
        (404, "the election does not exist"),
        (409, "the election is not in setup, already has keys or a ceremony"),
        (422, "a guardian id is unsafe or repeated, or their number is not the election's"),
    ),
)
def start(election_id: Id, body: StartCeremony, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_admin(caller)
    with ctx.tx() as s:
        c, slots = ceremony.start(s, election_id, list(body.guardian_ids), caller.subject)
        return {
            "election_id": election_id,
            "key_mode": ceremony.GUARDIAN_MODE,
            "state": c.state,
            "guardians": [
                {
                    "guardian_id": g.guardian_id,
                    "sequence_order": g.sequence_order,
                    "token": issue_token(
                        ctx.settings,
                        f"guardian:{election_id}:{g.guardian_id}",
                        Role.GUARDIAN,
                        election_id=election_id,
                        guardian_id=g.guardian_id,
                        key=ctx.jwt_key,
                    ),
                }
                for g in slots
            ],
        }


@router.get(
    "/{election_id}/ceremony",
    response_model=CeremonyStatus,
    summary="The ceremony's round, every guardian's steps and times; for a guardian, what is due",
    responses=errors(*_AUTH, _SEE, _NO_CEREMONY),
)
def get_status(election_id: Id, ctx: Ctx, caller: Caller) -> dict[str, Any]:
    require_election_access(caller, election_id)
    return _status(ctx, election_id, caller)


@router.get(
    "/{election_id}/ceremony/keys",
    summary="The guardians' public keys posted so far (ElectionPublicKey JSON), in sequence order",
    responses=errors(*_AUTH, _SEE, _NO_CEREMONY),
)
def get_keys(election_id: Id, ctx: Ctx, caller: Caller) -> list[dict[str, Any]]:
    require_election_access(caller, election_id)
    with ctx.tx() as s:
        return ceremony.public_keys(s, election_id)


@router.post(
    "/{election_id}/ceremony/guardians/{guardian_id}/key",
    response_model=CeremonyStatus,
    summary="Post the guardian's public key (ElectionPublicKey JSON); the same key again is a no-op",
    responses=errors(
        *_AUTH,
        _OWN,
        _NO_CEREMONY,
        (409, "the slot holds another key, the key is another guardian's, or the keys round is over"),
        (422, "malformed, not this slot's owner or sequence order, or a Schnorr proof fails (named)"),
    ),
)
def post_key(
    election_id: Id, guardian_id: GuardianId, body: ElectionPublicKeyJson, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    require_own_guardian(caller, election_id, guardian_id)
    with ctx.tx() as s:
        ceremony.post_key(s, election_id, guardian_id, body.as_json())
    return _status(ctx, election_id, caller)


@router.post(
    "/{election_id}/ceremony/guardians/{guardian_id}/backups",
    response_model=CeremonyStatus,
    summary="Post the guardian's partial key backups, one for every other guardian (ciphertexts)",
    responses=errors(
        *_AUTH,
        _OWN,
        _NO_CEREMONY,
        (409, "not every key is in yet, the ceremony failed, or other backups were posted"),
        (422, "malformed, a wrong owner, receiver or sequence order, or a guardian left out"),
    ),
)
def post_backups(
    election_id: Id, guardian_id: GuardianId, body: PostBackups, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    require_own_guardian(caller, election_id, guardian_id)
    with ctx.tx() as s:
        ceremony.post_backups(s, election_id, guardian_id, [b.as_json() for b in body.backups])
    return _status(ctx, election_id, caller)


@router.get(
    "/{election_id}/ceremony/guardians/{guardian_id}/backups",
    summary="The backups addressed to this guardian (ElectionPartialKeyBackup JSON), by sender",
    responses=errors(*_AUTH, _OWN, _NO_CEREMONY),
)
def get_backups(election_id: Id, guardian_id: GuardianId, ctx: Ctx, caller: Caller) -> list[dict[str, Any]]:
    require_own_guardian(caller, election_id, guardian_id)
    with ctx.tx() as s:
        return ceremony.backups_to(s, election_id, guardian_id)


@router.post(
    "/{election_id}/ceremony/guardians/{guardian_id}/verifications",
    response_model=CeremonyStatus,
    summary="Post the guardian's verifications of the backups it received; a false one ends the ceremony",
    responses=errors(
        *_AUTH,
        _OWN,
        _NO_CEREMONY,
        (409, "a sender has posted no backup for it, a verification changes, or the round is over"),
        (422, "malformed, not naming this guardian as verifier and receiver, or a sender twice"),
    ),
)
def post_verifications(
    election_id: Id, guardian_id: GuardianId, body: PostVerifications, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    require_own_guardian(caller, election_id, guardian_id)
    with ctx.tx() as s:
        ceremony.post_verifications(s, election_id, guardian_id, [v.as_json() for v in body.verifications])
    return _status(ctx, election_id, caller)


@router.post(
    "/{election_id}/ceremony/guardians/{guardian_id}/confirmation",
    response_model=CeremonyStatus,
    summary="Confirm the published context with a proof made with the guardian's own secret key",
    responses=errors(
        *_AUTH,
        _OWN,
        _NO_CEREMONY,
        (409, "the context is not published yet, the ceremony failed, or another confirmation was posted"),
        (422, "malformed, or not a proof of this guardian's secret key for this context"),
    ),
)
def post_confirmation(
    election_id: Id, guardian_id: GuardianId, body: ConfirmationJson, ctx: Ctx, caller: Caller
) -> dict[str, Any]:
    require_own_guardian(caller, election_id, guardian_id)
    with ctx.tx() as s:
        ceremony.confirm(s, election_id, guardian_id, body.as_json())
    return _status(ctx, election_id, caller)
