"""Starting a guardian's decryption: check its credentials, create its jobs, escrow what each needs.

Three phases, so that the expensive one holds no database connection:

1. ``check_request`` (a short read transaction): the election, the guardian, the tally, duplicates,
   the missing guardians; it reads the public records the key checks need.
2. ``check_credentials`` (no transaction open): the credential file's header and KDF bounds, then,
   in one of the process's few KDF slots, the passphrase; a test decryption and the backups for the
   missing guardians.
3. ``write_decryption`` (a short write transaction): the checks of phase 1 again, under the election's
   lock (another request may have created a job meanwhile), then escrow, partial and compensated jobs.

Every check that can refuse runs before the first write, and the writes share one transaction. Each
job's escrow holds the least it needs: the partial job the guardian's election secret key, each
compensated job only the opened backup coordinate of its missing guardian.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.db.models import ElectionJob, Guardian, OperationType
from service.db.session import SessionFactory, transaction
from service.elections import crypto
from service.elections.escrow import store_escrow
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.jobs import planning, queries
from service.jobs.callbacks import JobOptions
from service.security.kdf_gate import KdfGate
from service.security.sealing import (
    CredentialFile,
    SealError,
    credential_owner,
    open_credential,
    read_credential,
)


@dataclass(slots=True)
class DecryptionStart:
    partial_job: ElectionJob | None
    compensated_jobs: list[ElectionJob] = field(default_factory=list)


@dataclass(slots=True)
class DecryptionRequest:
    """What phase 1 found: public records only (nothing secret), and the guardian's live partial jobs."""

    election_id: int
    guardian_id: str
    missing: list[str]
    public_record: dict[str, Any]
    missing_records: list[dict[str, Any]]
    existing: list[ElectionJob]


def _credential_file(credentials: Any) -> dict[str, Any]:
    if isinstance(credentials, str):
        try:
            credentials = json.loads(credentials)
        except ValueError:
            raise Invalid("credentials are not valid JSON") from None
    if not isinstance(credentials, dict):
        raise Invalid("credentials must be the credential file's JSON object")
    return credentials


def read_credentials(credentials: Any, election_id: int, guardian_id: str) -> CredentialFile:
    """The credential file after every check that costs no KDF work: whose it is, its format, and KDF
    parameters within the server's bounds."""
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
        return read_credential(sealed)
    except SealError as exc:
        raise Invalid(str(exc)) from None


def open_credentials(credential: CredentialFile, passphrase: str, gate: KdfGate) -> dict[str, Any]:
    """The private record inside a checked credential file; the KDF runs in one of ``gate``'s slots."""
    with gate.slot():
        try:
            plain = open_credential(credential, passphrase)
        except SealError as exc:
            # "wrong passphrase or damaged file": the only thing the caller learns.
            raise Forbidden(str(exc)) from None
    try:
        return json.loads(plain)
    except ValueError:
        raise Invalid("the credential file's content is not JSON") from None


def check_request(
    session: Session,
    election_id: int,
    guardian_id: str,
    missing_guardian_ids: Sequence[str] = (),
    *,
    lock: bool = False,
) -> DecryptionRequest:
    """Phase 1 (and again in phase 3, with ``lock``): the cheap refusals, and the public records."""
    election = queries.load_election(session, election_id, lock=lock)
    guardian = session.get(Guardian, (election_id, guardian_id))
    if guardian is None:
        raise NotFound(f"guardian {guardian_id!r} is not a guardian of election {election_id}")
    queries.completed_tally_job(session, election)
    if guardian_id in (election.missing_guardian_ids or []):
        raise Conflict(
            f"guardian {guardian_id!r} was declared missing for election {election_id}: its share is"
            " reconstructed from the others' compensated shares"
        )
    missing = list(missing_guardian_ids or [])
    existing = queries.jobs_of(
        session,
        election_id,
        OperationType.PARTIAL_DECRYPTION,
        queries.BLOCKING_STATUSES,
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
    return DecryptionRequest(
        election_id, guardian_id, missing, guardian.public_record, missing_records, existing
    )


def check_credentials(
    request: DecryptionRequest, credentials: Any, passphrase: str, gate: KdfGate
) -> crypto.PrivateGuardianRecord:
    """Phase 2, with no transaction open: the private record, once it proved to be this guardian's key
    (a test decryption) holding valid backups for the missing guardians."""
    credential = read_credentials(credentials, request.election_id, request.guardian_id)
    record_json = open_credentials(credential, passphrase, gate)
    private = crypto.parse_private_record(record_json, request.guardian_id)
    del record_json
    crypto.check_guardian_key(private, request.public_record)
    if request.missing_records:
        crypto.check_backups(private, request.missing_records)
    return private


def write_decryption(
    session: Session,
    secret: bytes,
    checked: DecryptionRequest,
    private: crypto.PrivateGuardianRecord,
    created_by: str | None = None,
    sizes: planning.UnitSizes | None = None,
    options: JobOptions | None = None,
) -> DecryptionStart:
    """Phase 3: phase 1's checks again under the election's lock, then the writes."""
    election_id, guardian_id, missing = checked.election_id, checked.guardian_id, checked.missing
    now = check_request(session, election_id, guardian_id, missing, lock=True)
    if now.public_record != checked.public_record or now.missing_records != checked.missing_records:
        raise Conflict(f"guardian records of election {election_id} changed during the request; retry")
    existing = now.existing

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
    if options is not None:
        for job in [created, *children]:
            if job is not None:
                options.apply(job)
    return DecryptionStart(created, children)


def start_decryption(
    db: SessionFactory | Engine,
    secret: bytes,
    gate: KdfGate,
    *,
    election_id: int,
    guardian_id: str,
    credentials: Any,
    passphrase: str,
    missing_guardian_ids: Sequence[str] = (),
    created_by: str | None = None,
    sizes: planning.UnitSizes | None = None,
    options: JobOptions | None = None,
) -> DecryptionStart:
    """The three phases; the jobs returned stay readable after their transaction committed."""
    with transaction(db) as s:
        request = check_request(s, election_id, guardian_id, missing_guardian_ids)
    private = check_credentials(request, credentials, passphrase, gate)
    try:
        with transaction(db) as s:
            return write_decryption(s, secret, request, private, created_by, sizes, options)
    finally:
        del private  # the whole record lives no longer than the request; each job's escrow holds its part
