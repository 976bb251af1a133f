"""Key escrow for running decryption jobs: a guardian's private record sealed under the server secret.

Written when a guardian starts a decryption (after its credentials passed the test decryption), read
by the bridge's workers through ``load_escrow(session, escrow_id, secret)`` with the id from the job's
metadata (``escrow_id``), erased by ``erase_escrow`` when the guardian's jobs end. Never in a message.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.db.models import GuardianKeyEscrow
from service.security.sealing import open_with_secret, seal_with_secret

PURPOSE = "guardian-key-escrow"


def _context(election_id: int, guardian_id: str) -> str:
    # Bound as associated data: a sealed row moved under another guardian's ids does not open.
    return f"escrow:{int(election_id)}:{guardian_id}"


def store_escrow(
    session: Session, secret: bytes, election_id: int, guardian_id: str, private_record: dict[str, Any]
) -> uuid.UUID:
    """Seal and store; one row per (election, guardian): a second call re-seals in place, keeping the id
    that running jobs already reference."""
    sealed = seal_with_secret(
        json.dumps(private_record, separators=(",", ":")).encode("utf-8"),
        secret,
        purpose=PURPOSE,
        context=_context(election_id, guardian_id),
    )
    row = session.scalars(
        select(GuardianKeyEscrow)
        .where(GuardianKeyEscrow.election_id == election_id, GuardianKeyEscrow.guardian_id == guardian_id)
        .with_for_update()
    ).one_or_none()
    if row is None:
        row = GuardianKeyEscrow(
            id=uuid.uuid4(), election_id=election_id, guardian_id=guardian_id, sealed=sealed
        )
        session.add(row)
    else:
        row.sealed = sealed
    session.flush()
    return row.id


def load_escrow(session: Session, escrow_id: uuid.UUID | str, secret: bytes) -> dict[str, Any]:
    """The private guardian record JSON; KeyError if erased (the job ended or was never escrowed)."""
    row = session.get(GuardianKeyEscrow, uuid.UUID(str(escrow_id)))
    if row is None:
        raise KeyError(f"key escrow {escrow_id} does not exist (erased when the guardian's jobs ended?)")
    plain = open_with_secret(
        row.sealed, secret, purpose=PURPOSE, context=_context(row.election_id, row.guardian_id)
    )
    return json.loads(plain)


def erase_escrow(session: Session, election_id: int, guardian_id: str) -> bool:
    result = session.execute(
        delete(GuardianKeyEscrow).where(
            GuardianKeyEscrow.election_id == election_id, GuardianKeyEscrow.guardian_id == guardian_id
        )
    )
    return bool(result.rowcount)
