"""The custodial key ceremony's private guardian records, in the service's custody until each guardian
claims its own (``custodial_claim``, migration 0011; this module owns every write to it).

The custodial ceremony (``service.elections.elections.run_key_ceremony``) makes every guardian's keys in
the API process. It used to hand every credential file to the admin who ran it, who then held everything
needed to decrypt any ballot. Now each private record is kept here, sealed under the server secret (HKDF
purpose ``custodial-claim``, the election, guardian and manifest hash bound as associated data, so a row
copied under another guardian does not open), until that guardian claims it:

1. ``check_claim`` (a short read transaction): the election, the row, and whether it was claimed already.
2. No transaction open: the record unsealed with the server secret, then sealed under the guardian's
   passphrase into today's credential file (``seal_credential``); the KDF runs in one of the process's
   ``kdf_gate`` slots, as a decryption's credential check does.
3. ``take`` (a short write transaction, the row locked): still unclaimed? Then ``sealed`` is erased and
   ``claimed_at`` written, in the transaction whose commit lets the file out. A concurrent claim that
   lost the race gets nothing.

A later claim is refused (410) stating when the first one happened, so a guardian whose file someone else
took (anyone holding its token) learns it. Only the guardian's own token may claim; an admin's may not.

What this trusts: until a guardian claims its record, the service (and whoever holds the server secret
and the database) can open it; after the claim the service holds nothing of it, except, while a
decryption job runs, that job's escrow (``service.elections.escrow``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from service.db.models import CustodialClaim, Election
from service.db.session import SessionFactory, transaction
from service.errors import Conflict, Gone, Invalid, NotFound
from service.jobs.clock import db_now
from service.security.auth import Principal, require_own_guardian
from service.security.kdf_gate import KdfGate
from service.security.sealing import (
    KdfParams,
    SealError,
    check_passphrase,
    open_with_secret,
    seal_with_secret,
)

PURPOSE = "custodial-claim"


def _context(election_id: int, guardian_id: str, manifest_hash: str | None) -> str:
    # Bound as associated data: a sealed record moved under another election or guardian does not open.
    return f"custody:{int(election_id)}:{guardian_id}:{manifest_hash or ''}"


def hold(
    session: Session,
    secret: bytes,
    election: Election,
    privates: Sequence[tuple[str, dict[str, Any]]],
) -> None:
    """Keep each (guardian id, private record) sealed under the server secret, in the ceremony's
    transaction (after its ``guardian`` rows)."""
    for guardian_id, private in privates:
        sealed = seal_with_secret(
            json.dumps(private, separators=(",", ":")).encode("utf-8"),
            secret,
            purpose=PURPOSE,
            context=_context(election.id, guardian_id, election.manifest_hash),
        )
        session.add(CustodialClaim(election_id=election.id, guardian_id=guardian_id, sealed=sealed))
    session.flush()


@dataclass(frozen=True, slots=True)
class PendingClaim:
    """What phase 1 read: the sealed record (under the server secret) and what binds it."""

    election_id: int
    guardian_id: str
    manifest_hash: str | None
    sealed: bytes


@dataclass(frozen=True, slots=True)
class Claimed:
    election_id: int
    guardian_id: str
    claimed_at: datetime
    credentials: dict[str, Any]  # the credential file: the private record sealed under the passphrase


def _claimed_reason(election_id: int, guardian_id: str, claimed_at: datetime | None) -> str:
    when = claimed_at.isoformat() if claimed_at is not None else "an unknown time"
    return (
        f"guardian {guardian_id!r}'s credential file of election {election_id} was claimed at {when}; the"
        " service no longer holds it. If this guardian did not claim it then, someone holding its token"
        " did: tell the election's officials"
    )


def _row(session: Session, election_id: int, guardian_id: str, *, lock: bool = False) -> CustodialClaim:
    stmt = select(CustodialClaim).where(
        CustodialClaim.election_id == election_id, CustodialClaim.guardian_id == guardian_id
    )
    if lock:
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).one_or_none()
    if row is None:
        e = session.get(Election, election_id)
        if e is None:
            raise NotFound(f"election {election_id} does not exist")
        raise NotFound(
            f"the service holds no credential file of guardian {guardian_id!r} of election {election_id}"
            " (no custodial key ceremony made one here: its guardians hold their own keys, the ceremony"
            " has not run, or it ran before claims and handed its files out)"
        )
    return row


def check_claim(session: Session, election_id: int, guardian_id: str) -> PendingClaim:
    """Phase 1: the row, unclaimed; Gone naming the first claim's time otherwise."""
    row = _row(session, election_id, guardian_id)
    if row.sealed is None:
        raise Gone(_claimed_reason(election_id, guardian_id, row.claimed_at))
    e = session.get(Election, election_id)
    assert e is not None  # the row's foreign key holds it
    return PendingClaim(election_id, guardian_id, e.manifest_hash, bytes(row.sealed))


def credential_file(
    pending: PendingClaim, secret: bytes, passphrase: str, gate: KdfGate, kdf: KdfParams | None
) -> dict[str, Any]:
    """Phase 2, with no transaction open: the held record as a credential file under ``passphrase``."""
    from service.elections.elections import credential_file as seal

    try:
        plain = open_with_secret(
            pending.sealed,
            secret,
            purpose=PURPOSE,
            context=_context(pending.election_id, pending.guardian_id, pending.manifest_hash),
        )
    except SealError:
        raise Conflict(
            f"guardian {pending.guardian_id!r}'s held record does not open under this server's secret"
            " (AMARVOTE_SERVER_SECRET differs from the one of its key ceremony)"
        ) from None
    private = json.loads(plain)
    del plain
    with gate.slot():
        try:
            return seal(
                pending.election_id, pending.manifest_hash, pending.guardian_id, private, passphrase, kdf
            )
        finally:
            del private


def take(session: Session, pending: PendingClaim, claimed_by: str | None) -> datetime:
    """Phase 3: erase the held record and note the claim, unless a concurrent claim did first."""
    row = _row(session, pending.election_id, pending.guardian_id, lock=True)
    if row.sealed is None:
        raise Gone(_claimed_reason(pending.election_id, pending.guardian_id, row.claimed_at))
    now = db_now(session)
    row.sealed = None
    row.claimed_at = now
    row.claimed_by = claimed_by
    session.flush()
    return now


def claim(
    db: SessionFactory | Engine,
    secret: bytes,
    gate: KdfGate,
    caller: Principal,
    *,
    election_id: int,
    guardian_id: str,
    passphrase: str,
    kdf: KdfParams | None = None,
) -> Claimed:
    """A guardian's claim, with its own token (``caller``) and passphrase: its credential file, once.
    The file leaves only if the transaction that erased the service's copy committed."""
    require_own_guardian(caller, election_id, guardian_id)
    try:
        check_passphrase(passphrase)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    with transaction(db) as s:
        pending = check_claim(s, election_id, guardian_id)
    credentials = credential_file(pending, secret, passphrase, gate, kdf)
    with transaction(db) as s:
        claimed_at = take(s, pending, caller.subject)
    return Claimed(election_id, guardian_id, claimed_at, credentials)


def claims_of(session: Session, election_id: int) -> dict[str, datetime | None]:
    """Each held or claimed guardian of the election and when it claimed (None: still held)."""
    rows = session.execute(
        select(CustodialClaim.guardian_id, CustodialClaim.claimed_at).where(
            CustodialClaim.election_id == election_id
        )
    ).all()
    return {g: at for g, at in rows}
