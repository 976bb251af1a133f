"""The voter's decision on a ballot the service encrypted (the Benaloh challenge).

After encryption the voter sees the encrypted ballot and its tracking code, then casts it or challenges
it. A cast ballot's nonce is dropped: no response, row, log or error carries it, so nothing the voter
takes home proves how the ballot voted. A challenged ballot is stored as spoiled (it can never count)
and only then is its opening, the master nonce and the plaintext, returned: with them anyone can
re-encrypt the plaintext and compare the ciphertexts byte for byte.

Deciding in the same request as the encryption (``cast`` or ``spoil``) tells the service the decision
before it commits to the encryption; ``pending`` lets the voter decide after seeing the code, which is
what makes the challenge a check on the service.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from service.elections.ballots import submitted_state
from service.elections.crypto import Encryption, ballot_state
from service.elections.pending import PendingBallots
from service.errors import Conflict, NotFound


def response(receipt: dict[str, Any], encryption: Encryption) -> dict[str, Any]:
    """The receipt and the encrypted ballot; the opening only for a ballot stored as spoiled."""
    spoiled = receipt["state"] == "spoiled"
    state = ballot_state("spoil" if spoiled else "cast")
    out = {**receipt, "ballot": encryption.submitted(state).to_json()}
    if spoiled:
        out["nonce"] = encryption.nonce
        out["plaintext"] = encryption.plaintext
    return out


def hold(session: Session, store: PendingBallots, election_id: int, encryption: Encryption) -> dict[str, Any]:
    """Keep the ballot for the voter's decision (nothing is written) and say how to decide."""
    _require_not_submitted(session, election_id, encryption.object_id)
    entry = store.hold(election_id, encryption)
    base = f"/api/elections/{election_id}/ballots/{quote(encryption.object_id, safe='')}"
    return {
        "ballot_id": encryption.object_id,
        "state": "pending",
        "code": encryption.code,
        "expires_at": entry.expires_at.isoformat(),
        "cast_url": f"{base}/cast",
        "challenge_url": f"{base}/challenge",
        "ballot": encryption.ballot.to_json(),
    }


def take(session: Session, store: PendingBallots, election_id: int, ballot_id: str) -> Encryption:
    """The pending ballot, removed from the store whatever happens next: a decision is made once."""
    entry = store.take(election_id, ballot_id)
    if entry is not None:
        return entry.encryption()
    _require_not_submitted(session, election_id, ballot_id)
    raise NotFound(
        f"ballot {ballot_id} is not pending on this API process (expired, the process restarted, or it was"
        " encrypted on another replica): encrypt it again"
    )


def _require_not_submitted(session: Session, election_id: int, ballot_id: str) -> None:
    state = submitted_state(session, election_id, ballot_id)
    if state is not None:
        raise Conflict(f"ballot id(s) already submitted: {ballot_id} ({state})")
