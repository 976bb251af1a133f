"""Under the reference: take a record and private guardian records made by our code, check the guardians
and decrypt with the reference's own guardians and mediator.

usage: reference_decrypts_ours.py RECORD_DIR PRIVATE_DIR N_AVAILABLE
Also parses our tally.json and spoiled_ballots/ as the reference's PlaintextTally.
Checks every Schnorr proof of the guardian records, the joint key and commitment hash against the
context (``combine_election_public_keys``), every partial key backup (each guardian verifies every other
guardian's backup with ``verify_election_partial_key_backup``), then decrypts the encrypted tally and the
spoiled ballots with the first N_AVAILABLE guardians (the others compensated for). Prints a JSON summary.
"""

import glob
import json
import logging
import os
import sys

logging.disable(logging.CRITICAL)

from electionguard.ballot import BallotBoxState, SubmittedBallot  # noqa: E402
from electionguard.decryption_mediator import DecryptionMediator  # noqa: E402
from electionguard.election import CiphertextElectionContext  # noqa: E402
from electionguard.guardian import Guardian, GuardianRecord, PrivateGuardianRecord  # noqa: E402
from electionguard.key_ceremony import ElectionPublicKey, combine_election_public_keys  # noqa: E402
from electionguard.manifest import Manifest  # noqa: E402
from electionguard.serialize import from_file  # noqa: E402
from electionguard.tally import PlaintextTally, PublishedCiphertextTally  # noqa: E402
from electionguard_tools.helpers.tally_ceremony_orchestrator import TallyCeremonyOrchestrator  # noqa: E402


def counts(plaintext):
    if plaintext is None:
        return None
    return {
        c.object_id: {s.object_id: s.tally for s in c.selections.values()}
        for c in plaintext.contests.values()
    }


def main() -> None:
    record, private, n_available = sys.argv[1], sys.argv[2], int(sys.argv[3])
    context = from_file(CiphertextElectionContext, os.path.join(record, "context.json"))
    manifest = from_file(Manifest, os.path.join(record, "manifest.json"))
    records = sorted(
        (from_file(GuardianRecord, p) for p in glob.glob(os.path.join(record, "guardians", "*.json"))),
        key=lambda r: r.sequence_order,
    )
    keys = [
        ElectionPublicKey(
            r.guardian_id, r.sequence_order, r.election_public_key, r.election_commitments, r.election_proofs
        )
        for r in records
    ]
    joint = combine_election_public_keys(keys)
    privates = sorted(
        (
            from_file(PrivateGuardianRecord, p)
            for p in glob.glob(os.path.join(private, "private_guardians", "*.json"))
        ),
        key=lambda r: r.election_keys.sequence_order,
    )
    n, k = context.number_of_guardians, context.quorum
    guardians = [Guardian.from_private_record(p, n, k) for p in privates]
    backups_ok = all(
        g.verify_election_partial_key_backup(o.id).verified
        for g in guardians
        for o in guardians
        if o.id != g.id
    )
    tally = from_file(PublishedCiphertextTally, os.path.join(record, "encrypted_tally.json"))
    submitted = [
        from_file(SubmittedBallot, p) for p in glob.glob(os.path.join(record, "submitted_ballots", "*.json"))
    ]
    spoiled = [b for b in submitted if b.state == BallotBoxState.SPOILED]
    mediator = DecryptionMediator("reference-mediator", context)
    available = guardians[:n_available]
    if n_available < n:
        TallyCeremonyOrchestrator.perform_compensated_decryption_setup(
            available, [g.share_key() for g in guardians], mediator, context, tally, spoiled
        )
    else:
        TallyCeremonyOrchestrator.perform_decryption_setup(available, mediator, context, tally, spoiled)
    plaintext = mediator.get_plaintext_tally(tally, manifest)
    ballots = mediator.get_plaintext_ballots(spoiled, manifest) or {}
    # our published plaintexts (tally.json, spoiled_ballots/) parsed by the reference
    our_tally = from_file(PlaintextTally, os.path.join(record, "tally.json"))
    our_spoiled = [
        from_file(PlaintextTally, p) for p in glob.glob(os.path.join(record, "spoiled_ballots", "*.json"))
    ]
    print(
        json.dumps(
            {
                "our_tally_json": counts(our_tally),
                "our_spoiled_json": {b.object_id: counts(b) for b in our_spoiled},
                "proofs_valid": all(p.is_valid() for r in records for p in r.election_proofs),
                "joint_key_ok": joint.joint_public_key == context.elgamal_public_key,
                "commitment_hash_ok": joint.commitment_hash == context.commitment_hash,
                "manifest_hash_ok": manifest.crypto_hash() == context.manifest_hash,
                "backups_verified": backups_ok,
                "tally": counts(plaintext),
                "spoiled": {bid: counts(b) for bid, b in ballots.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
