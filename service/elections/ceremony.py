"""A remote (guardian-held) key ceremony: the reference's rounds, with each guardian's secret kept by it.

The service sees public data only: each guardian's ``ElectionPublicKey`` (commitments and Schnorr
proofs, checked on arrival), its partial key backups (hashed ElGamal ciphertexts to their receivers,
stored as sent: the service cannot open them), the receivers' verifications, and each guardian's
confirmation of the published context (a proof of knowledge of its secret key bound to that context,
``compute.ceremony``). It never receives a secret key, a coefficient or a backup's coordinate.

Rounds (``key_ceremony.state``):

1. ``keys``: each guardian posts its public key into its slot (``post_key``).
2. ``backups``: every key is in; each guardian posts a backup for every other guardian
   (``post_backups``), fetches those addressed to it (``backups_to``), checks them and posts one
   verification per sender (``post_verifications``). A failed verification ends the ceremony
   (``failed``, naming sender and receiver).
3. ``confirm``: every backup verified: the context the keys make is published; each guardian
   confirms it (``confirm``).
4. ``complete``: every guardian confirmed: the public guardian records and ``election.context`` are
   written exactly as the custodial ceremony writes them, and the election may be opened.

Every write locks the ceremony's row first, so the rounds advance once whatever the concurrency.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from compute.ceremony import Confirmation, expected_context, verify_confirmation
from compute.context import ElectionContext
from compute.group import FieldError, from_hex
from compute.guardian import (
    ElectionPartialKeyBackup,
    ElectionPartialKeyVerification,
    ElectionPublicKey,
    GuardianRecord,
)
from compute.keyceremony import verify_public_key
from service.db.models import (
    CeremonyBackup,
    CeremonyGuardian,
    CeremonyState,
    ElectionState,
    Guardian,
    KeyCeremony,
)
from service.elections.elections import check_guardian_ids, get_election
from service.errors import Conflict, Invalid, NotFound

GUARDIAN_MODE = "guardian"
CUSTODIAL_MODE = "custodial"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _canonical(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------------------------- loading


def _ceremony(session: Session, election_id: int, *, lock: bool = False) -> KeyCeremony:
    stmt = select(KeyCeremony).where(KeyCeremony.election_id == election_id)
    if lock:
        stmt = stmt.with_for_update()
    c = session.scalars(stmt).one_or_none()
    if c is None:
        get_election(session, election_id)  # 404 for an unknown election first
        raise NotFound(f"election {election_id} has no guardian-held key ceremony")
    return c


def _slots(session: Session, election_id: int) -> list[CeremonyGuardian]:
    return list(
        session.scalars(
            select(CeremonyGuardian)
            .where(CeremonyGuardian.election_id == election_id)
            .order_by(CeremonyGuardian.sequence_order)
        )
    )


def _slot(slots: list[CeremonyGuardian], election_id: int, guardian_id: str) -> CeremonyGuardian:
    for s in slots:
        if s.guardian_id == guardian_id:
            return s
    raise NotFound(f"guardian {guardian_id!r} has no slot in election {election_id}'s key ceremony")


def _backups(session: Session, election_id: int) -> list[CeremonyBackup]:
    return list(
        session.scalars(
            select(CeremonyBackup)
            .where(CeremonyBackup.election_id == election_id)
            .order_by(CeremonyBackup.sender_id, CeremonyBackup.receiver_id)
        )
    )


def _in_state(c: KeyCeremony, *states: CeremonyState, doing: str) -> None:
    if c.state in {s.value for s in states}:
        return
    if c.state == CeremonyState.FAILED.value:
        raise Conflict(f"election {c.election_id}'s key ceremony has failed ({c.failure}): cannot {doing}")
    raise Conflict(f"election {c.election_id}'s key ceremony is in round {c.state!r}: cannot {doing} now")


# ------------------------------------------------------------------------------------------------- start


def start(
    session: Session, election_id: int, guardian_ids: list[str], created_by: str | None
) -> tuple[KeyCeremony, list[CeremonyGuardian]]:
    """A guardian-held ceremony for an election in setup: one slot per guardian id, sequence orders 1..n
    in the given order. The election is marked guardian-held (no custodial ceremony will run on it)."""
    e = get_election(session, election_id, lock=True)
    if e.state != ElectionState.SETUP.value or e.context is not None:
        raise Conflict(f"election {election_id} already has its keys: a key ceremony has run")
    if session.get(KeyCeremony, election_id) is not None:
        raise Conflict(f"election {election_id}'s guardian-held key ceremony has already started")
    if session.scalars(select(Guardian.guardian_id).where(Guardian.election_id == election_id)).first():
        raise Conflict(f"election {election_id} already has guardians")
    if e.manifest_hash is None:
        raise Conflict(f"election {election_id} has no manifest hash")
    check_guardian_ids(e, guardian_ids)
    e.key_mode = GUARDIAN_MODE
    c = KeyCeremony(election_id=election_id, state=CeremonyState.KEYS.value, created_by=created_by)
    session.add(c)
    session.flush()
    slots = [
        CeremonyGuardian(election_id=election_id, guardian_id=gid, sequence_order=i + 1)
        for i, gid in enumerate(guardian_ids)
    ]
    session.add_all(slots)
    session.flush()
    return c, slots


# ------------------------------------------------------------------------------------------ 1. the keys


def _parse_key(data: dict[str, Any]) -> ElectionPublicKey:
    try:
        return ElectionPublicKey.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise Invalid(f"the public key is malformed ({type(exc).__name__})") from None


def post_key(session: Session, election_id: int, guardian_id: str, data: dict[str, Any]) -> KeyCeremony:
    """The guardian's public key into its slot: owner and sequence order the slot's, ``quorum``
    commitments, key = first commitment, every Schnorr proof valid. The same key again changes nothing;
    another key for a taken slot is a conflict."""
    c = _ceremony(session, election_id, lock=True)
    e = get_election(session, election_id)
    slots = _slots(session, election_id)
    slot = _slot(slots, election_id, guardian_id)
    key = _parse_key(data)
    if key.owner_id != guardian_id:
        raise Invalid(f"the key's owner_id {key.owner_id!r} is not this slot's guardian {guardian_id!r}")
    if key.sequence_order != slot.sequence_order:
        raise Invalid(
            f"the key's sequence_order {key.sequence_order} is not guardian {guardian_id!r}'s"
            f" ({slot.sequence_order})"
        )
    if problems := verify_public_key(key, e.quorum):
        raise Invalid("; ".join(problems))
    canonical = key.to_json()
    if slot.public_key is not None:
        if _canonical(slot.public_key) == _canonical(canonical):
            return c
        raise Conflict(
            f"guardian {guardian_id!r}'s slot already holds another key (posted at"
            f" {_iso(slot.key_posted_at)}): if this guardian did not post it, its token is in other hands"
        )
    _in_state(c, CeremonyState.KEYS, doing="post a key")
    for other in slots:
        if other.public_key is not None and other.public_key["key"] == canonical["key"]:
            raise Conflict(f"this key is already guardian {other.guardian_id!r}'s")
    slot.public_key = canonical
    slot.key_posted_at = _now()
    if all(s.public_key is not None for s in slots):
        c.state = CeremonyState.BACKUPS.value
    session.flush()
    return c


def public_keys(session: Session, election_id: int) -> list[dict[str, Any]]:
    """The keys posted so far (``ElectionPublicKey`` JSON), in sequence order."""
    _ceremony(session, election_id)
    return [s.public_key for s in _slots(session, election_id) if s.public_key is not None]


# --------------------------------------------------------------------------------------- 2. the backups


def post_backups(
    session: Session, election_id: int, guardian_id: str, items: list[dict[str, Any]]
) -> KeyCeremony:
    """The guardian's backups, one for every other guardian, each naming this guardian as its owner and
    its receiver's id and sequence order. Stored as sent (ciphertexts). The same set again changes
    nothing; another set is a conflict."""
    c = _ceremony(session, election_id, lock=True)
    slots = _slots(session, election_id)
    me = _slot(slots, election_id, guardian_id)
    if c.state == CeremonyState.KEYS.value:
        waiting = ", ".join(repr(s.guardian_id) for s in slots if s.public_key is None)
        raise Conflict(f"backups wait for every key: not yet posted by {waiting}")
    orders = {s.guardian_id: s.sequence_order for s in slots}
    parsed: dict[str, ElectionPartialKeyBackup] = {}
    for i, item in enumerate(items):
        try:
            b = ElectionPartialKeyBackup.from_json(item)
        except FieldError as exc:
            raise Invalid(f"backups[{i}].encrypted_coordinate.{exc.path}: {exc.reason}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise Invalid(f"backups[{i}] is malformed ({type(exc).__name__})") from None
        if b.owner_id != guardian_id:
            raise Invalid(f"backups[{i}]: owner_id {b.owner_id!r} is not the sender {guardian_id!r}")
        if b.designated_id == guardian_id or b.designated_id not in orders:
            raise Invalid(f"backups[{i}]: designated_id {b.designated_id!r} is not another guardian's")
        if b.designated_sequence_order != orders[b.designated_id]:
            raise Invalid(
                f"backups[{i}]: designated_sequence_order {b.designated_sequence_order} is not guardian"
                f" {b.designated_id!r}'s ({orders[b.designated_id]})"
            )
        if b.designated_id in parsed:
            raise Invalid(f"backups[{i}]: a second backup for guardian {b.designated_id!r}")
        parsed[b.designated_id] = b
    if missing := [gid for gid in orders if gid != guardian_id and gid not in parsed]:
        raise Invalid(f"no backup for guardian(s) {', '.join(repr(m) for m in missing)}")
    stored = {
        b.receiver_id: b
        for b in session.scalars(
            select(CeremonyBackup).where(
                CeremonyBackup.election_id == election_id, CeremonyBackup.sender_id == guardian_id
            )
        )
    }
    if stored:
        if all(_canonical(stored[r].backup) == _canonical(b.to_json()) for r, b in parsed.items()):
            return c
        raise Conflict(f"guardian {guardian_id!r} has already posted other backups")
    _in_state(c, CeremonyState.BACKUPS, doing="post backups")
    now = _now()
    session.add_all(
        CeremonyBackup(
            election_id=election_id, sender_id=guardian_id, receiver_id=r, backup=b.to_json(), posted_at=now
        )
        for r, b in parsed.items()
    )
    me.backups_posted_at = now
    session.flush()
    return c


def backups_to(session: Session, election_id: int, guardian_id: str) -> list[dict[str, Any]]:
    """The backups posted so far that are addressed to ``guardian_id`` (``ElectionPartialKeyBackup``
    JSON), by sender."""
    _ceremony(session, election_id)
    _slot(_slots(session, election_id), election_id, guardian_id)
    return [
        b.backup
        for b in session.scalars(
            select(CeremonyBackup)
            .where(CeremonyBackup.election_id == election_id, CeremonyBackup.receiver_id == guardian_id)
            .order_by(CeremonyBackup.sender_id)
        )
    ]


def post_verifications(
    session: Session, election_id: int, guardian_id: str, items: list[dict[str, Any]]
) -> KeyCeremony:
    """The receiver's verifications, one per sender whose backup it checked (all at once or as they
    come). A failed one ends the ceremony naming sender and receiver; when every backup is verified,
    the context is published."""
    c = _ceremony(session, election_id, lock=True)
    slots = _slots(session, election_id)
    me = _slot(slots, election_id, guardian_id)
    mine = {
        b.sender_id: b
        for b in session.scalars(
            select(CeremonyBackup).where(
                CeremonyBackup.election_id == election_id, CeremonyBackup.receiver_id == guardian_id
            )
        )
    }
    parsed: dict[str, ElectionPartialKeyVerification] = {}
    for i, item in enumerate(items):
        try:
            v = ElectionPartialKeyVerification.from_json(item)
        except (KeyError, TypeError, ValueError) as exc:
            raise Invalid(f"verifications[{i}] is malformed ({type(exc).__name__})") from None
        if v.verifier_id != guardian_id or v.designated_id != guardian_id:
            raise Invalid(
                f"verifications[{i}]: verifier_id and designated_id must be the receiver {guardian_id!r}"
            )
        if v.owner_id in parsed:
            raise Invalid(f"verifications[{i}]: a second verification of guardian {v.owner_id!r}'s backup")
        if v.owner_id not in mine:
            raise Conflict(f"guardian {v.owner_id!r} has posted no backup for guardian {guardian_id!r}")
        parsed[v.owner_id] = v
    changed = [s for s, v in parsed.items() if mine[s].verified is None]
    for sender, v in parsed.items():
        if mine[sender].verified is not None and mine[sender].verified != v.verified:
            raise Conflict(f"guardian {guardian_id!r} has already verified guardian {sender!r}'s backup")
    if not changed:
        return c
    _in_state(c, CeremonyState.BACKUPS, doing="post verifications")
    now = _now()
    for sender in changed:
        mine[sender].verified = parsed[sender].verified
        mine[sender].verified_at = now
    others = len(slots) - 1
    if len(mine) == others and all(b.verified is not None for b in mine.values()):
        me.verifications_posted_at = now
    if failed := sorted(s for s in changed if not parsed[s].verified):
        c.state = CeremonyState.FAILED.value
        c.failure = "; ".join(
            f"guardian {s!r}'s backup for guardian {guardian_id!r} failed its verification" for s in failed
        )
        c.ended_at = now
    else:
        _publish_if_verified(session, c, slots)
    session.flush()
    return c


def _publish_if_verified(session: Session, c: KeyCeremony, slots: list[CeremonyGuardian]) -> None:
    backups = _backups(session, c.election_id)
    n = len(slots)
    if len(backups) != n * (n - 1) or not all(b.verified for b in backups):
        return
    e = get_election(session, c.election_id)
    assert e.manifest_hash is not None  # checked when the ceremony started
    keys = [ElectionPublicKey.from_json(s.public_key) for s in slots if s.public_key is not None]
    c.context = expected_context(keys, e.quorum, from_hex(e.manifest_hash)).to_json()
    c.state = CeremonyState.CONFIRM.value
    c.context_published_at = _now()


# ------------------------------------------------------------------------------------ 3. confirmations


def confirm(session: Session, election_id: int, guardian_id: str, data: dict[str, Any]) -> KeyCeremony:
    """The guardian's confirmation of the published context: a proof of knowledge of its secret key
    bound to guardian and context (``compute.ceremony.verify_confirmation``). The last one writes the
    public guardian records and the election's context."""
    c = _ceremony(session, election_id, lock=True)
    slots = _slots(session, election_id)
    me = _slot(slots, election_id, guardian_id)
    try:
        proof = Confirmation.from_json(data)
    except FieldError as exc:
        raise Invalid(f"{exc.path}: {exc.reason}") from None
    if me.confirmation is not None and c.state in (CeremonyState.CONFIRM.value, CeremonyState.COMPLETE.value):
        if _canonical(me.confirmation) == _canonical(proof.to_json()):
            return c
        raise Conflict(f"guardian {guardian_id!r} has already confirmed")
    _in_state(c, CeremonyState.CONFIRM, doing="confirm")
    assert c.context is not None and me.public_key is not None
    context = ElectionContext.from_json(c.context)
    key = from_hex(me.public_key["key"])
    if not verify_confirmation(guardian_id, me.sequence_order, key, context, proof):
        raise Invalid(
            f"the confirmation is not a proof of guardian {guardian_id!r}'s secret key for election"
            f" {election_id}'s published context"
        )
    me.confirmation = proof.to_json()
    me.confirmed_at = _now()
    if all(s.confirmed_at is not None for s in slots):
        _complete(session, c, slots)
    session.flush()
    return c


def _complete(session: Session, c: KeyCeremony, slots: list[CeremonyGuardian]) -> None:
    """What the custodial ceremony writes: the public guardian records and the election's context."""
    e = get_election(session, c.election_id, lock=True)
    for s in slots:
        assert s.public_key is not None
        record = GuardianRecord.from_public_key(ElectionPublicKey.from_json(s.public_key)).to_json()
        session.add(
            Guardian(
                election_id=e.id,
                guardian_id=s.guardian_id,
                sequence_order=s.sequence_order,
                public_record=record,
            )
        )
    e.context = c.context
    c.state = CeremonyState.COMPLETE.value
    c.ended_at = _now()


def unconfirmed(session: Session, election_id: int) -> list[str]:
    """The guardians of a guardian-held ceremony who have not confirmed (all of them before its last
    round)."""
    return [s.guardian_id for s in _slots(session, election_id) if s.confirmed_at is None]


# ---------------------------------------------------------------------------------------------- status


def _due(
    c: KeyCeremony, slot: CeremonyGuardian, slots: list[CeremonyGuardian], backups: list[CeremonyBackup]
) -> dict[str, Any]:
    """What the guardian ``slot`` has to do now, and whom it waits for."""
    to_verify = sorted(
        b.sender_id for b in backups if b.receiver_id == slot.guardian_id and b.verified is None
    )
    senders = {b.sender_id for b in backups if b.receiver_id == slot.guardian_id}
    awaiting = [
        s.guardian_id for s in slots if s.guardian_id != slot.guardian_id and s.guardian_id not in senders
    ]
    actions: list[str] = []
    if c.state == CeremonyState.KEYS.value and slot.public_key is None:
        actions.append("post_key")
    elif c.state == CeremonyState.BACKUPS.value:
        if slot.backups_posted_at is None:
            actions.append("post_backups")
        if to_verify:
            actions.append("post_verifications")
    elif c.state == CeremonyState.CONFIRM.value and slot.confirmed_at is None:
        actions.append("confirm")
    return {
        "actions": actions,
        "backups_to_verify": to_verify if c.state == CeremonyState.BACKUPS.value else [],
        "backups_awaited_from": awaiting if c.state == CeremonyState.BACKUPS.value else [],
    }


def status(session: Session, election_id: int, guardian_id: str | None = None) -> dict[str, Any]:
    """The ceremony's round and every guardian's steps with their times; for a guardian, what is due."""
    c = _ceremony(session, election_id)
    e = get_election(session, election_id)
    slots = _slots(session, election_id)
    backups = _backups(session, election_id)
    out: dict[str, Any] = {
        "election_id": election_id,
        "key_mode": e.key_mode,
        "state": c.state,
        "failure": c.failure,
        "number_of_guardians": e.number_of_guardians,
        "quorum": e.quorum,
        "manifest_hash": e.manifest_hash,
        "context": c.context,
        "created_at": _iso(c.created_at),
        "context_published_at": _iso(c.context_published_at),
        "ended_at": _iso(c.ended_at),
        "guardians": [
            {
                "guardian_id": s.guardian_id,
                "sequence_order": s.sequence_order,
                "key_posted_at": _iso(s.key_posted_at),
                "backups_posted_at": _iso(s.backups_posted_at),
                "verifications_posted_at": _iso(s.verifications_posted_at),
                "confirmed_at": _iso(s.confirmed_at),
            }
            for s in slots
        ],
        "due": None,
    }
    if guardian_id is not None:
        out["due"] = _due(c, _slot(slots, election_id, guardian_id), slots, backups)
    return out
