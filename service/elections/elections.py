"""Elections: creation (a reference manifest, or a candidate list), the key ceremony, open and close."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from compute.ids import GUARDIAN_ID_MAX, UnsafeId, check_id
from service.db.models import Ballot, Election, ElectionState, Guardian
from service.elections import crypto
from service.errors import Conflict, Invalid, NotFound
from service.security.sealing import KdfParams, seal_with_passphrase

CREDENTIAL_KIND = "amarvote.private_guardian_record"


def get_election(session: Session, election_id: int, *, lock: bool = False) -> Election:
    stmt = select(Election).where(Election.id == election_id)
    if lock:
        stmt = stmt.with_for_update()
    e = session.scalars(stmt).one_or_none()
    if e is None:
        raise NotFound(f"election {election_id} does not exist")
    return e


def _check_counts(number_of_guardians: int, quorum: int) -> None:
    if not 1 <= number_of_guardians <= 100:
        raise Invalid("number_of_guardians must be between 1 and 100")
    if not 1 <= quorum <= number_of_guardians:
        raise Invalid(f"quorum must be between 1 and number_of_guardians ({number_of_guardians})")


def create_election(
    session: Session,
    *,
    name: str,
    number_of_guardians: int,
    quorum: int,
    manifest: dict[str, Any] | None = None,
    candidate_names: list[str] | None = None,
    party_names: list[str] | None = None,
    max_choices: int = 1,
    created_by: str | None = None,
) -> Election:
    """An election in SETUP, from a reference manifest or from a candidate list (exactly one)."""
    _check_counts(number_of_guardians, quorum)
    if (manifest is None) == (candidate_names is None):
        raise Invalid("give either a manifest or candidate_names, not both and not neither")
    if manifest is not None:
        manifest_json, manifest_hash = crypto.parse_manifest(manifest)
    else:
        manifest_json, manifest_hash = crypto.simple_manifest(
            list(candidate_names or []), party_names, max_choices, name
        )
    return add_election(session, name, manifest_json, manifest_hash, number_of_guardians, quorum, created_by)


def add_election(
    session: Session,
    name: str,
    manifest_json: dict[str, Any],
    manifest_hash: str,
    number_of_guardians: int,
    quorum: int,
    created_by: str | None,
    *,
    state: ElectionState = ElectionState.SETUP,
    context: dict[str, Any] | None = None,
) -> Election:
    """The election row, manifest version 1 (callers have checked the manifest and the counts)."""
    e = Election(
        name=name,
        state=state.value,
        manifest=manifest_json,
        manifest_version=1,
        manifest_hash=manifest_hash,
        number_of_guardians=number_of_guardians,
        quorum=quorum,
        context=context,
        created_by=created_by,
    )
    session.add(e)
    session.flush()
    return e


def replace_manifest(session: Session, election_id: int, manifest: dict[str, Any]) -> Election:
    """A new manifest version, allowed only before the key ceremony (the context hashes the manifest)."""
    e = get_election(session, election_id, lock=True)
    if e.state != ElectionState.SETUP.value or e.context is not None or e.key_mode == "guardian":
        raise Conflict(f"election {election_id}'s manifest is fixed once its key ceremony has started")
    e.manifest, e.manifest_hash = crypto.parse_manifest(manifest)
    e.manifest_version += 1
    session.flush()
    return e


@dataclass(frozen=True, slots=True)
class CustodialGuardian:
    """A guardian of a custodial ceremony: public data only (its record waits in ``custody``)."""

    guardian_id: str
    sequence_order: int


def credential_file(
    election_id: int,
    manifest_hash: str | None,
    guardian_id: str,
    private_record: dict[str, Any],
    passphrase: str,
    kdf: KdfParams | None = None,
) -> dict[str, Any]:
    """A guardian's credential file: its private record sealed under its passphrase, bound to the
    election (the KDF runs here: callers outside a transaction, in a ``kdf_gate`` slot)."""
    owner = {
        "kind": CREDENTIAL_KIND,
        "election_id": election_id,
        "guardian_id": guardian_id,
        "manifest_hash": manifest_hash,
    }
    plaintext = json.dumps(private_record, separators=(",", ":")).encode("utf-8")
    return seal_with_passphrase(plaintext, passphrase, owner=owner, params=kdf)


def seal_credential(
    e: Election,
    guardian_id: str,
    private_record: dict[str, Any],
    passphrase: str,
    kdf: KdfParams | None = None,
) -> dict[str, Any]:
    """A guardian's credential file: its private record sealed under its passphrase, bound to the election."""
    return credential_file(e.id, e.manifest_hash, guardian_id, private_record, passphrase, kdf)


PASSPHRASES_MOVED = (
    "the key ceremony takes guardian ids only ({guardian_ids: [...]}), never a passphrase: each guardian"
    " claims its own credential file, sealed under a passphrase it chooses, with its own token at"
    " POST /api/elections/{id}/guardians/{guardian_id}/claim"
)


def run_key_ceremony(
    session: Session,
    election_id: int,
    guardian_ids: Sequence[str],
    secret: bytes,
) -> list[CustodialGuardian]:
    """Make every guardian's keys, keep the public records and the context, and keep each private
    record in the service's custody, sealed under the server secret, until its guardian claims it
    (``service.elections.custody``). Nothing secret is returned: the admin who runs the ceremony
    receives public data (and the guardians' tokens) only."""
    from service.elections import custody

    e = get_election(session, election_id, lock=True)
    if e.state != ElectionState.SETUP.value or e.context is not None:
        raise Conflict(f"election {election_id}'s key ceremony has already run")
    if e.key_mode == "guardian":
        raise Conflict(f"election {election_id}'s guardians hold their own keys: its ceremony is remote")
    if isinstance(guardian_ids, dict) or any(not isinstance(g, str) for g in guardian_ids):
        raise Invalid(PASSPHRASES_MOVED)
    ids = check_guardian_ids(e, guardian_ids)
    if e.manifest_hash is None:
        raise Conflict(f"election {election_id} has no manifest hash")
    privates, records, context = crypto.key_ceremony(e.number_of_guardians, e.quorum, e.manifest_hash, ids)
    guardians = []
    for record in records:
        session.add(
            Guardian(
                election_id=e.id,
                guardian_id=record["guardian_id"],
                sequence_order=record["sequence_order"],
                public_record=record,
            )
        )
        guardians.append(CustodialGuardian(record["guardian_id"], record["sequence_order"]))
    session.flush()
    custody.hold(
        session,
        secret,
        e,
        [(r["guardian_id"], p) for p, r in zip(privates, records, strict=True)],
    )
    del privates
    e.context = context
    session.flush()
    return guardians


def check_guardian_ids(e: Election, guardian_ids: Sequence[str]) -> list[str]:
    """A ceremony's guardian ids (custodial or remote): one per guardian, distinct, each a safe id
    (``compute.ids``: it becomes a file name in the record and a URL segment)."""
    ids = list(guardian_ids)
    if len(ids) != e.number_of_guardians:
        raise Invalid(f"election {e.id} has {e.number_of_guardians} guardians, {len(ids)} were given")
    for gid in ids:
        try:
            check_id(gid, "a guardian id", GUARDIAN_ID_MAX)
        except UnsafeId as exc:
            raise Invalid(str(exc)) from None
    if len(set(ids)) != len(ids):
        raise Invalid("a guardian id is given twice")
    return ids


def open_election(session: Session, election_id: int) -> Election:
    e = get_election(session, election_id, lock=True)
    if e.state != ElectionState.SETUP.value:
        raise Conflict(f"election {election_id} is {e.state}: only an election in setup is opened")
    if e.context is None and e.key_mode == "guardian":
        from service.elections.ceremony import unconfirmed

        waiting = ", ".join(repr(g) for g in unconfirmed(session, election_id))
        raise Conflict(
            f"election {election_id}'s guardian-held key ceremony is not complete:"
            f" not yet confirmed by {waiting}"
        )
    if e.context is None:
        raise Conflict(f"election {election_id} has no keys yet: run the key ceremony first")
    e.state = ElectionState.OPEN.value
    session.flush()
    return e


def close_election(session: Session, election_id: int) -> Election:
    e = get_election(session, election_id, lock=True)
    if e.state != ElectionState.OPEN.value:
        raise Conflict(f"election {election_id} is {e.state}: only an open election is closed")
    e.state = ElectionState.CLOSED.value
    session.flush()
    return e


def guardians_of(session: Session, election_id: int) -> list[Guardian]:
    return list(
        session.scalars(
            select(Guardian).where(Guardian.election_id == election_id).order_by(Guardian.sequence_order)
        )
    )


def ballot_counts(session: Session, election_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Ballot.state, func.count()).where(Ballot.election_id == election_id).group_by(Ballot.state)
    ).all()
    by_state = {int(s): int(n) for s, n in rows}
    return {"cast": by_state.get(1, 0), "spoiled": by_state.get(2, 0), "total": sum(by_state.values())}


def summary(session: Session, e: Election) -> dict[str, Any]:
    return {
        "election_id": e.id,
        "name": e.name,
        "state": e.state,
        "number_of_guardians": e.number_of_guardians,
        "quorum": e.quorum,
        "manifest_hash": e.manifest_hash,
        "manifest_version": e.manifest_version,
        "keys_ready": e.context is not None,
        "key_mode": e.key_mode,
        "ballots": ballot_counts(session, e.id),
        "created_at": e.created_at.isoformat() if e.created_at else None,
    }
