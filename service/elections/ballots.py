"""Ballots: encrypted ballots submitted (one or in bulk) and plaintext ballots the service encrypts.

The crypto (parsing, proof checks, encryption) runs outside any database transaction: ``prepare_*``
take an election snapshot and return ready rows; ``store`` then writes them in a short transaction that
holds the election row FOR SHARE, so closing the election waits for submissions in flight and no ballot
lands after the close (concurrent submissions do not block each other).

A ballot is one set of selection ciphertexts, whatever its id: ``store`` refuses a ballot that repeats a
selection ciphertext of a ballot already in the election or earlier in the same request (a clone, which
every proof accepts). The fingerprints' unique index makes that hold between concurrent requests too.
Likewise a tracking code names one ballot of its election (``ballot``'s unique (election_id, code)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from compute.ballot import SubmittedBallot
from service.db.models import Ballot, BallotCiphertext, Election, ElectionState
from service.elections import crypto
from service.errors import Conflict, Invalid, NotFound

MAX_BULK = 5000
LOOKUP_BATCH = 1000  # fingerprints per IN (...) list, well under either database's parameter limit


@dataclass(frozen=True, slots=True)
class ElectionSnapshot:
    election_id: int
    manifest: dict[str, Any]
    manifest_hash: str
    context: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PreparedBallot:
    object_id: str
    state: int
    code: str
    payload: bytes
    fingerprints: tuple[bytes, ...]


def snapshot_for_ballots(session: Session, election_id: int) -> ElectionSnapshot:
    e = session.get(Election, election_id)
    if e is None:
        raise NotFound(f"election {election_id} does not exist")
    _require_open(e)
    assert e.context is not None and e.manifest_hash is not None  # an open election has keys
    return ElectionSnapshot(e.id, e.manifest, e.manifest_hash, e.context)


def _require_open(e: Election) -> None:
    if e.state != ElectionState.OPEN.value:
        raise Conflict(f"election {e.id} is {e.state}: ballots are accepted only while it is open")


def prepared(b: SubmittedBallot) -> PreparedBallot:
    """The row to store for a checked ballot."""
    payload, code = crypto.encode(b)
    return PreparedBallot(b.object_id, int(b.state), code, payload, crypto.fingerprints(b))


def _check_id(object_id: str) -> None:
    # The id becomes a file name in the record and a URL path: the one rule of compute/ids.py, here too
    # for the doors that bypass the API's types (bulk items, encrypt, record import).
    from compute.ids import UnsafeId, check_id

    try:
        check_id(object_id, "a ballot's object_id")
    except UnsafeId as exc:
        raise Invalid(str(exc)) from None


def prepare_submitted(snap: ElectionSnapshot, ballot: Any, action: str) -> PreparedBallot:
    """Parse and validate one encrypted ballot (the reference's JSON); the reason on rejection."""
    b = crypto.parse_submitted(ballot, crypto.ballot_state(action))
    _check_id(b.object_id)
    crypto.check_ballot_election(b, snap.manifest_hash)
    crypto.validate_one(b, snap.manifest, snap.context)
    return prepared(b)


def prepare_bulk(snap: ElectionSnapshot, items: Sequence[tuple[Any, str]]) -> list[PreparedBallot]:
    """All or nothing: every ballot is checked (proofs in batches); any rejection refuses the lot and
    names every bad ballot."""
    if not items:
        raise Invalid("no ballots given")
    if len(items) > MAX_BULK:
        raise Invalid(f"at most {MAX_BULK} ballots per request, got {len(items)}")
    parsed: list[SubmittedBallot] = []
    problems: list[str] = []
    for i, (ballot, action) in enumerate(items):
        try:
            b = crypto.parse_submitted(ballot, crypto.ballot_state(action))
            _check_id(b.object_id)
            crypto.check_ballot_election(b, snap.manifest_hash)
            parsed.append(b)
        except Invalid as exc:
            problems.append(f"item {i}: {exc.reason}")
    ids = [b.object_id for b in parsed]
    if dups := sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"ballot ids repeated in the request: {', '.join(dups[:10])}")
    if not problems:
        problems = crypto.validate_many(parsed, snap.manifest, snap.context)
    if problems:
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise Invalid(f"{len(problems)} ballot(s) rejected, none stored: " + "; ".join(problems[:20]) + more)
    return [prepared(b) for b in parsed]


def prepare_plaintext(snap: ElectionSnapshot, plaintext: Any) -> crypto.Encryption:
    """Encrypt for the voter (no state yet): ``decide`` or ``service.elections.pending`` takes it on."""
    enc = crypto.encrypt_plaintext(plaintext, snap.manifest, snap.context, snap.election_id)
    _check_id(enc.object_id)
    return enc


def decide(enc: crypto.Encryption, action: str) -> PreparedBallot:
    """The row of an encrypted plaintext ballot cast or spoiled; the row never holds the nonce."""
    return prepared(enc.submitted(crypto.ballot_state(action)))


def submitted_state(session: Session, election_id: int, object_id: str) -> str | None:
    """'cast' or 'spoiled' if a ballot with this id is stored in the election, else None."""
    state = session.scalar(
        select(Ballot.state).where(Ballot.election_id == election_id, Ballot.object_id == object_id)
    )
    return None if state is None else ("cast" if state == 1 else "spoiled")


def store(session: Session, election_id: int, ballots: Sequence[PreparedBallot]) -> list[int]:
    """Insert the ballots and their fingerprints; refuses (and stores none) if the election closed
    meanwhile, an id exists, or a ballot repeats a selection ciphertext (of a stored ballot or of one
    earlier in ``ballots``)."""
    e = session.scalars(
        select(Election).where(Election.id == election_id).with_for_update(read=True)
    ).one_or_none()
    if e is None:
        raise NotFound(f"election {election_id} does not exist")
    _require_open(e)
    ids = [b.object_id for b in ballots]
    existing = set(
        session.scalars(
            select(Ballot.object_id).where(Ballot.election_id == election_id, Ballot.object_id.in_(ids))
        )
    )
    if existing:
        raise Conflict(f"ballot id(s) already submitted: {', '.join(sorted(existing)[:10])}")
    if within := _repeated_codes(ballots):
        raise Conflict(_listed(within))
    if stored := _stored_codes(session, election_id, ballots):
        raise Conflict(_listed(stored))
    if within := crypto.repeats([(b.object_id, b.fingerprints) for b in ballots]):
        raise Conflict(_listed(within))
    try:
        # A savepoint, so the refusal can still look up what a concurrent request stored first.
        with session.begin_nested():
            rows = session.scalars(
                insert(Ballot).returning(Ballot.seq, sort_by_parameter_order=True),
                [
                    {
                        "election_id": election_id,
                        "object_id": b.object_id,
                        "state": b.state,
                        "code": b.code,
                        "payload": b.payload,
                    }
                    for b in ballots
                ],
            ).all()
    except IntegrityError as exc:  # a concurrent request stored the same id or code first
        raise Conflict(_raced(session, election_id, ballots)) from exc
    seqs = [int(s) for s in rows]
    _store_fingerprints(session, election_id, ballots, seqs)
    return seqs


def _code_reason(code: str, ballot_id: str, holder: str) -> str:
    return f"tracking code {code} of ballot {ballot_id} is already ballot {holder}'s"


def _repeated_codes(ballots: Sequence[PreparedBallot]) -> list[str]:
    first: dict[str, str] = {}
    found = []
    for b in ballots:
        holder = first.setdefault(b.code, b.object_id)
        if holder != b.object_id:
            found.append(_code_reason(b.code, b.object_id, holder))
    return found


def _stored_codes(session: Session, election_id: int, ballots: Sequence[PreparedBallot]) -> list[str]:
    """A reason for each ballot whose tracking code a stored ballot of the election already has: one
    receipt must name one ballot (``ballot``'s unique index on (election_id, code) settles races)."""
    by_code = {b.code: b.object_id for b in ballots}
    codes = list(by_code)
    found = []
    for i in range(0, len(codes), LOOKUP_BATCH):
        rows = session.execute(
            select(Ballot.code, Ballot.object_id).where(
                Ballot.election_id == election_id, Ballot.code.in_(codes[i : i + LOOKUP_BATCH])
            )
        )
        found += [_code_reason(code, by_code[code], holder) for code, holder in rows]
    return sorted(found)


def _raced(session: Session, election_id: int, ballots: Sequence[PreparedBallot]) -> str:
    ids = [b.object_id for b in ballots]
    taken = set(
        session.scalars(
            select(Ballot.object_id).where(Ballot.election_id == election_id, Ballot.object_id.in_(ids))
        )
    )
    if taken:
        return f"ballot id(s) already submitted: {', '.join(sorted(taken)[:10])}"
    if codes := _stored_codes(session, election_id, ballots):
        return _listed(codes)
    # Only if the holder vanished between the failed insert and this look-up.
    return f"ballot id(s) or tracking code(s) already submitted: {', '.join(ids[:10])}"


def _store_fingerprints(
    session: Session, election_id: int, ballots: Sequence[PreparedBallot], seqs: list[int]
) -> None:
    # Sorted, so concurrent requests take the index's row locks in one order and cannot deadlock.
    pairs = sorted((fp, seq) for b, seq in zip(ballots, seqs, strict=True) for fp in b.fingerprints)
    rows = [{"election_id": election_id, "fingerprint": fp, "ballot_seq": seq} for fp, seq in pairs]
    if not rows:
        return
    try:
        # A savepoint, so the refusal can still look up which stored ballot holds the ciphertext.
        with session.begin_nested():
            session.execute(insert(BallotCiphertext), rows)
    except IntegrityError as exc:  # a stored ballot (maybe committed a moment ago) holds one of them
        raise Conflict(_listed(_stored_repeats(session, election_id, ballots))) from exc


def _stored_repeats(session: Session, election_id: int, ballots: Sequence[PreparedBallot]) -> list[str]:
    owner = {fp: b.object_id for b in ballots for fp in b.fingerprints}
    fps = list(owner)
    pairs: dict[tuple[str, str], None] = {}
    for i in range(0, len(fps), LOOKUP_BATCH):
        rows = session.execute(
            select(BallotCiphertext.fingerprint, Ballot.object_id)
            .join(Ballot, Ballot.seq == BallotCiphertext.ballot_seq)
            .where(
                BallotCiphertext.election_id == election_id,
                BallotCiphertext.fingerprint.in_(fps[i : i + LOOKUP_BATCH]),
            )
        )
        for fp, original in rows:
            pairs.setdefault((owner[fp], original))
    found = [crypto.repeat_reason(b, original) for b, original in sorted(pairs)]
    # Empty only if the holder vanished between the failed insert and this look-up.
    return found or [
        f"ballot(s) {', '.join(sorted(set(owner.values()))[:10])} repeat a stored selection ciphertext"
    ]


def _listed(reasons: list[str]) -> str:
    more = f" (and {len(reasons) - 10} more)" if len(reasons) > 10 else ""
    return "; ".join(reasons[:10]) + more


def receipt(b: PreparedBallot, seq: int) -> dict[str, Any]:
    return {
        "ballot_id": b.object_id,
        "state": "cast" if b.state == 1 else "spoiled",
        "code": b.code,
        "seq": seq,
    }
