"""Elections made elsewhere: a record's manifest, context and guardians' public records, checked
against each other before anything is stored, then opened for its submitted ballots."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.db.models import Election, ElectionState, Guardian
from service.elections import crypto
from service.elections.elections import add_election
from service.errors import Invalid


def import_election(
    session: Session,
    *,
    name: str,
    manifest: dict[str, Any],
    context: dict[str, Any],
    guardian_records: list[dict[str, Any]],
    created_by: str | None = None,
) -> Election:
    """An OPEN election with the given keys: the guardians' proofs, the joint key, the commitment hash
    and the context's hashes must all agree (as a verifier checks them), or nothing is stored."""
    from compute.guardian import GuardianRecord
    from compute.ids import GUARDIAN_ID_MAX, UnsafeId, check_id
    from compute.manifest import Manifest
    from compute.record import ElectionRecord
    from compute.verify import verify_guardians

    # A guardian id becomes a file name of the record and a token subject: the one rule, first.
    try:
        for raw in guardian_records:
            check_id(
                raw.get("guardian_id") if isinstance(raw, dict) else None, "guardian_id", GUARDIAN_ID_MAX
            )
    except UnsafeId as exc:
        raise Invalid(f"the election's guardian records are malformed: {exc}") from None
    manifest_json, manifest_hash = crypto.parse_manifest(manifest)
    try:
        record = ElectionRecord(
            manifest=Manifest.from_json(manifest_json),
            context=crypto.context_of(context),
            guardians=[GuardianRecord.from_json(g) for g in guardian_records],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise Invalid(f"the election's context or guardian records are malformed: {exc}") from exc
    if problems := verify_guardians(record):
        raise Invalid("the election's keys do not verify: " + "; ".join(problems[:10]))
    e = add_election(
        session,
        name,
        manifest_json,
        manifest_hash,
        record.context.number_of_guardians,
        record.context.quorum,
        created_by,
        state=ElectionState.OPEN,  # its keys exist: ballots may be submitted at once
        context=record.context.to_json(),
    )
    for g in record.guardians:
        session.add(
            Guardian(
                election_id=e.id,
                guardian_id=g.guardian_id,
                sequence_order=g.sequence_order,
                public_record=g.to_json(),
            )
        )
    session.flush()
    return e
