"""A whole key ceremony in one process, as the reference's ``KeyCeremonyOrchestrator`` runs it.

Each guardian makes a polynomial of ``quorum`` coefficients with commitments and Schnorr proofs,
sends every guardian (itself included, as the reference does) a partial key backup: its polynomial
at the receiver's sequence order, under hashed ElGamal to the receiver's key. Every receiver checks
the proofs and that each backup lies on the sender's committed polynomial. Then the joint key is the
product of the guardians' keys and the commitment hash is H(all commitments in guardian order).
"""

from __future__ import annotations

from collections.abc import Sequence

from gmpy2 import mpz

from compute.constants import P
from compute.context import ElectionContext, make_context
from compute.elgamal import KeyPair
from compute.guardian import (
    ElectionKeyPair,
    ElectionPartialKeyBackup,
    ElectionPartialKeyVerification,
    ElectionPublicKey,
    GuardianRecord,
    PrivateGuardianRecord,
)
from compute.hashed_elgamal import backup_seed, encrypt_coordinate
from compute.hashing import hash_elems
from compute.polynomial import (
    compute_polynomial_coordinate,
    generate_polynomial,
    verify_polynomial_coordinate,
)
from compute.schnorr import SchnorrProof, invalid_proofs


class KeyCeremonyError(ValueError):
    pass


def generate_election_key_pair(guardian_id: str, sequence_order: int, quorum: int) -> ElectionKeyPair:
    polynomial = generate_polynomial(quorum)
    c0 = polynomial.coefficients[0]
    return ElectionKeyPair(guardian_id, sequence_order, KeyPair(c0.value, c0.commitment), polynomial)


def generate_backup(sender: ElectionKeyPair, receiver: ElectionPublicKey) -> ElectionPartialKeyBackup:
    coordinate = compute_polynomial_coordinate(receiver.sequence_order, sender.polynomial)
    seed = backup_seed(receiver.owner_id, receiver.sequence_order)
    return ElectionPartialKeyBackup(
        sender.owner_id,
        receiver.owner_id,
        receiver.sequence_order,
        encrypt_coordinate(coordinate, receiver.key, seed),
    )


def verify_backup(
    receiver: ElectionKeyPair, backup: ElectionPartialKeyBackup, sender: ElectionPublicKey
) -> ElectionPartialKeyVerification:
    """As the reference's ``verify_election_partial_key_backup``; a MAC failure is a failed verification."""
    coordinate = backup.decrypt(receiver)
    ok = coordinate is not None and verify_polynomial_coordinate(
        coordinate, backup.designated_sequence_order, sender.coefficient_commitments
    )
    return ElectionPartialKeyVerification(backup.owner_id, backup.designated_id, receiver.owner_id, ok)


def verify_public_key(key: ElectionPublicKey, quorum: int) -> list[str]:
    """Problems with a guardian's published key: commitment count, key = first commitment, proofs."""
    return verify_public_keys([key], quorum)


def verify_public_keys(keys: Sequence[ElectionPublicKey], quorum: int) -> list[str]:
    """``verify_public_key`` for each key, every key's Schnorr proofs checked in one batch."""
    problems = []
    proofs: list[tuple[str, int, SchnorrProof]] = []
    for key in keys:
        if len(key.coefficient_commitments) != quorum or len(key.coefficient_proofs) != quorum:
            problems.append(f"guardian {key.owner_id}: expected {quorum} commitments and proofs")
        if not key.coefficient_commitments or key.coefficient_commitments[0] != key.key:
            problems.append(f"guardian {key.owner_id}: public key is not the first commitment")
        for j, (commitment, proof) in enumerate(
            zip(key.coefficient_commitments, key.coefficient_proofs, strict=False)
        ):
            if proof.public_key != commitment:
                problems.append(f"guardian {key.owner_id}: invalid Schnorr proof for coefficient {j}")
            else:
                proofs.append((key.owner_id, j, proof))
    for i in invalid_proofs([p for _, _, p in proofs]):
        problems.append(f"guardian {proofs[i][0]}: invalid Schnorr proof for coefficient {proofs[i][1]}")
    return problems


def joint_public_key(keys: Sequence[ElectionPublicKey | GuardianRecord]) -> mpz:
    acc = mpz(1)
    for k in keys:
        acc = acc * (k.key if isinstance(k, ElectionPublicKey) else k.election_public_key) % P
    return acc


def commitment_hash(keys: Sequence[ElectionPublicKey | GuardianRecord]) -> mpz:
    """H(K_1,0, ..., K_n,k-1): the reference hashes the flat list of all commitments as one element."""
    commitments = [
        c
        for k in keys
        for c in (k.coefficient_commitments if isinstance(k, ElectionPublicKey) else k.election_commitments)
    ]
    return hash_elems(commitments)


def run_key_ceremony(
    number_of_guardians: int,
    quorum: int,
    manifest_hash: mpz,
    guardian_ids: Sequence[str] | None = None,
) -> tuple[list[PrivateGuardianRecord], list[GuardianRecord], ElectionContext]:
    """Keys, backups between all pairs, their verification, the joint key and the context."""
    if not 1 <= quorum <= number_of_guardians:
        raise KeyCeremonyError(f"quorum {quorum} must be between 1 and {number_of_guardians}")
    ids = list(guardian_ids) if guardian_ids is not None else [str(i + 1) for i in range(number_of_guardians)]
    if len(ids) != number_of_guardians or len(set(ids)) != len(ids):
        raise KeyCeremonyError("guardian ids must be distinct, one per guardian")

    keys = [generate_election_key_pair(gid, i + 1, quorum) for i, gid in enumerate(ids)]
    public = [k.share() for k in keys]
    for pk in public:
        if problems := verify_public_key(pk, quorum):
            raise KeyCeremonyError("; ".join(problems))

    privates = [
        PrivateGuardianRecord(k.owner_id, k, guardian_election_public_keys={p.owner_id: p for p in public})
        for k in keys
    ]
    for sender, rec in zip(keys, privates, strict=True):
        for receiver_key, receiver_rec in zip(public, privates, strict=True):
            backup = generate_backup(sender, receiver_key)
            rec.backups_to_share[receiver_key.owner_id] = backup
            if receiver_key.owner_id != sender.owner_id:
                receiver_rec.guardian_election_partial_key_backups[sender.owner_id] = backup

    # Each guardian keeps the verifications of its own backups, keyed by the verifier, as the reference's
    # Guardian.save_election_partial_key_verification does.
    for receiver, rec in zip(keys, privates, strict=True):
        for sender_id, backup in rec.guardian_election_partial_key_backups.items():
            sender_rec = next(p for p in privates if p.guardian_id == sender_id)
            v = verify_backup(receiver, backup, rec.guardian_election_public_keys[sender_id])
            if not v.verified:
                raise KeyCeremonyError(
                    f"backup from guardian {sender_id} to {receiver.owner_id} failed verification"
                )
            sender_rec.guardian_election_partial_key_verifications[receiver.owner_id] = v

    records = [GuardianRecord.from_public_key(p) for p in public]
    context = make_context(
        number_of_guardians, quorum, joint_public_key(public), commitment_hash(public), manifest_hash
    )
    return privates, records, context
