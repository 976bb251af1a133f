"""A guardian's side of a remote (guardian-held) key ceremony: pure functions, no I/O.

In a remote ceremony each guardian makes and keeps its own polynomial; the service sees only what
these functions make for it to see: the guardian's ``ElectionPublicKey`` (commitments and Schnorr
proofs), its partial key backups (hashed ElGamal ciphertexts to each receiver's key), its
verifications of the backups it received, and finally a **confirmation**: a Schnorr proof of
knowledge of its election secret key whose challenge is bound to the published context, so that
nobody without the key can confirm for it and a proof made for one context is worthless for another.

The rounds, as the reference's ``KeyCeremonyMediator`` runs them:

1. ``make_guardian_keys``: the guardian's polynomial; ``key.share()`` is what it posts.
2. ``backups_for``: once every key is in, one backup for every other guardian.
3. ``verify_received_backups``: each backup addressed to it, checked against its sender's commitments.
4. ``check_published_context``: the context the service published, recomputed from the published keys.
5. ``make_confirmation`` (the service checks it with ``verify_confirmation``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.constants import P, Q
from compute.context import ElectionContext, make_context
from compute.group import g_pow_p, hex_field, in_p, in_q, pow_p, rand_q, to_hex
from compute.guardian import (
    ElectionKeyPair,
    ElectionPartialKeyBackup,
    ElectionPartialKeyVerification,
    ElectionPublicKey,
)
from compute.hashing import hash_elems
from compute.keyceremony import (
    commitment_hash,
    generate_backup,
    generate_election_key_pair,
    joint_public_key,
    verify_backup,
)

CONFIRM_USAGE = "amarvote-confirm"


def make_guardian_keys(guardian_id: str, sequence_order: int, quorum: int) -> ElectionKeyPair:
    """The guardian's own polynomial of ``quorum`` coefficients, with commitments and proofs. Keep it
    secret; post ``.share()``."""
    return generate_election_key_pair(guardian_id, sequence_order, quorum)


def backups_for(
    sender: ElectionKeyPair, public_keys: Iterable[ElectionPublicKey]
) -> list[ElectionPartialKeyBackup]:
    """One backup for every other guardian: P_sender(receiver's order), encrypted to the receiver's key."""
    return [generate_backup(sender, k) for k in public_keys if k.owner_id != sender.owner_id]


def verify_received_backups(
    receiver: ElectionKeyPair,
    backups: Iterable[ElectionPartialKeyBackup],
    public_keys: Iterable[ElectionPublicKey],
) -> list[ElectionPartialKeyVerification]:
    """One verification per backup addressed to ``receiver``: it opens with the receiver's key and its
    coordinate lies on the sender's committed polynomial (the reference's
    ``verify_election_partial_key_backup``). A backup for someone else, or from an unknown sender, is
    a failed verification."""
    keys = {k.owner_id: k for k in public_keys}
    out = []
    for b in backups:
        sender = keys.get(b.owner_id)
        if (
            sender is None
            or b.designated_id != receiver.owner_id
            or b.designated_sequence_order != receiver.sequence_order
        ):
            out.append(ElectionPartialKeyVerification(b.owner_id, b.designated_id, receiver.owner_id, False))
            continue
        out.append(verify_backup(receiver, b, sender))
    return out


def expected_context(
    public_keys: Sequence[ElectionPublicKey], quorum: int, manifest_hash: mpz
) -> ElectionContext:
    """The context the published keys (in sequence order) make: joint key, commitment hash, hashes."""
    ordered = sorted(public_keys, key=lambda k: k.sequence_order)
    return make_context(
        len(ordered), quorum, joint_public_key(ordered), commitment_hash(ordered), manifest_hash
    )


def check_published_context(
    own: ElectionPublicKey,
    public_keys: Sequence[ElectionPublicKey],
    context: ElectionContext,
    manifest_hash: mpz,
) -> list[str]:
    """Problems with a published context, as the guardian sees them: its own key among the published
    ones, and the context recomputed from them (joint key, commitment hash, base hashes)."""
    problems = []
    mine = [k for k in public_keys if k.owner_id == own.owner_id]
    if len(mine) != 1 or mine[0].to_json() != own.to_json():
        problems.append(f"guardian {own.owner_id}'s own key is not the one published")
    if len({k.sequence_order for k in public_keys}) != len(public_keys):
        problems.append("two published keys share a sequence order")
    expected = expected_context(public_keys, context.quorum, manifest_hash)
    for name in (
        "number_of_guardians",
        "quorum",
        "elgamal_public_key",
        "commitment_hash",
        "manifest_hash",
        "crypto_base_hash",
        "crypto_extended_base_hash",
    ):
        if getattr(expected, name) != getattr(context, name):
            problems.append(f"context: {name} is not what the published keys make")
    return problems


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A Schnorr proof of knowledge of the guardian's election secret key s (K = g^s), its challenge
    bound to the guardian and the context: c = H("amarvote-confirm", guardian id, sequence order, K, h,
    extended base hash, commitment hash, joint key); g^u = h K^c."""

    commitment: mpz  # h = g^r
    challenge: mpz  # c
    response: mpz  # u = r + c s mod q

    def to_json(self) -> dict[str, Any]:
        return {
            "commitment": to_hex(self.commitment),
            "challenge": to_hex(self.challenge),
            "response": to_hex(self.response),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Confirmation:
        """Untrusted JSON: each field hex and in range (``FieldError`` naming it)."""
        return cls(hex_field(d, "commitment", P), hex_field(d, "challenge", Q), hex_field(d, "response", Q))


def confirmation_challenge(
    guardian_id: str, sequence_order: int, public_key: mpz, commitment: mpz, context: ElectionContext
) -> mpz:
    return hash_elems(
        CONFIRM_USAGE,
        guardian_id,
        int(sequence_order),
        mpz(public_key),
        mpz(commitment),
        mpz(context.crypto_extended_base_hash),
        mpz(context.commitment_hash),
        mpz(context.elgamal_public_key),
    )


def make_confirmation(keys: ElectionKeyPair, context: ElectionContext, r: mpz | None = None) -> Confirmation:
    """The guardian's confirmation of ``context``, made with its own election secret key."""
    s, k = keys.key_pair.secret_key, keys.key_pair.public_key
    r = rand_q() if r is None else r
    h = g_pow_p(r)
    c = confirmation_challenge(keys.owner_id, keys.sequence_order, k, h, context)
    return Confirmation(h, c, mpz(r + s * c) % Q)


def verify_confirmation(
    guardian_id: str, sequence_order: int, public_key: mpz, context: ElectionContext, proof: Confirmation
) -> bool:
    """Whether ``proof`` shows knowledge of the secret key of ``public_key``, for this guardian and
    this context."""
    if not (in_p(proof.commitment) and in_q(proof.challenge) and in_q(proof.response)):
        return False
    if proof.commitment == 0:
        return False
    c = confirmation_challenge(guardian_id, sequence_order, public_key, proof.commitment, context)
    if c != proof.challenge:
        return False
    return g_pow_p(proof.response) == proof.commitment * pow_p(public_key, c) % P
