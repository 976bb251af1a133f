"""Starting a guardian's decryption: check its credentials, create its jobs, escrow what each needs.

Order matters: every check that can refuse (election, guardian, tally, duplicates, the credential
file, the passphrase, a test decryption, the backups for missing guardians) runs before the first
write, and the writes (partial job, compensated jobs, one escrow per job) share the caller's one
transaction. Each escrow holds the least the job needs: the partial job the guardian's election secret
key, each compensated job only the opened backup coordinate of its missing guardian.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from service.db.models import ElectionJob, Guardian, OperationType
from service.elections import crypto
from service.elections.escrow import store_escrow
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.jobs import planning
from service.security.sealing import SealError, credential_owner, open_with_passphrase


@dataclass(slots=True)
class DecryptionStart:
    partial_job: ElectionJob | None
    compensated_jobs: list[ElectionJob] = field(default_factory=list)


def _credential_file(credentials: Any) -> dict[str, Any]:
    if isinstance(credentials, str):
        try:
            credentials = json.loads(credentials)
        except ValueError:
            raise Invalid("credentials are not valid JSON") from None
    if not isinstance(credentials, dict):
        raise Invalid("credentials must be the credential file's JSON object")
    return credentials


def open_credentials(credentials: Any, passphrase: str, election_id: int, guardian_id: str) -> dict[str, Any]:
    """The private record inside a credential file, after checking whose file it is."""
    sealed = _credential_file(credentials)
    try:
        owner = credential_owner(sealed)
    except SealError as exc:
        raise Invalid(str(exc)) from None
    if owner.get("election_id") != election_id or owner.get("guardian_id") != guardian_id:
        raise Invalid(
            f"this credential file is for guardian {owner.get('guardian_id')!r} of election"
            f" {owner.get('election_id')}, not guardian {guardian_id!r} of election {election_id}"
        )
    try:
        plain = open_with_passphrase(sealed, passphrase)
    except SealError as exc:
        # "wrong passphrase or damaged file": the only thing the caller learns.
        raise Forbidden(str(exc)) from None
    try:
        return json.loads(plain)
    except ValueError:
        raise Invalid("the credential file's content is not JSON") from None


def start_decryption(
    session: Session,
    secret: bytes,
    *,
    election_id: int,
    guardian_id: str,
    credentials: Any,
    passphrase: str,
    missing_guardian_ids: Sequence[str] = (),
    created_by: str | None = None,
    sizes: planning.UnitSizes | None = None,
) -> DecryptionStart:
    election = planning.load_election(session, election_id)
    guardian = session.get(Guardian, (election_id, guardian_id))
    if guardian is None:
        raise NotFound(f"guardian {guardian_id!r} is not a guardian of election {election_id}")
    planning.completed_tally_job(session, election)
    missing = list(missing_guardian_ids or [])
    existing = planning.jobs_of(
        session,
        election_id,
        OperationType.PARTIAL_DECRYPTION,
        planning.BLOCKING_STATUSES,
        guardian_id=guardian_id,
    )
    if existing and not missing:
        raise Conflict(
            f"guardian {guardian_id!r} already has a partial decryption job {existing[-1].job_id}"
            f" ({existing[-1].status})"
        )
    # The cheap refusals first, before any KDF or exponentiation work (planning checks them again).
    if guardian_id in missing:
        raise Invalid(f"guardian {guardian_id!r} cannot compensate for itself")
    if len(set(missing)) != len(missing):
        raise Invalid("a missing guardian is named twice")
    spare = election.number_of_guardians - election.quorum
    if len(missing) > spare:
        raise Conflict(
            f"{len(missing)} guardians missing but a quorum of {election.quorum} of"
            f" {election.number_of_guardians} tolerates at most {spare}"
        )
    missing_records = []
    for m in missing:
        g = session.get(Guardian, (election_id, m))
        if g is None:
            raise NotFound(f"missing guardian {m!r} is not a guardian of election {election_id}")
        missing_records.append(g.public_record)

    record_json = open_credentials(credentials, passphrase, election_id, guardian_id)
    private = crypto.parse_private_record(record_json, guardian_id)
    crypto.check_guardian_key(private, guardian.public_record)
    if missing_records:
        crypto.check_backups(private, missing_records)

    partial = existing[-1] if existing else None
    created = None
    if partial is None:
        created = partial = planning.create_partial_decryption_job(
            session, election_id, guardian_id, created_by, sizes
        )
        store_escrow(session, secret, created, private.decryption_key())
    children = (
        planning.create_compensated_decryption_jobs(session, partial.job_id, missing, created_by, sizes)
        if missing
        else []
    )
    for child in children:
        assert child.missing_guardian_id is not None
        store_escrow(session, secret, child, private.compensation_key(child.missing_guardian_id))
    del private, record_json
    return DecryptionStart(created, children)
