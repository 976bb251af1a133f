"""The guardian's side of a remote key ceremony (compute/ceremony.py): each guardian's own keys, backups
for the others, their verification, the context check, and the confirmation proof bound to guardian and
context."""

from __future__ import annotations

import dataclasses

from gmpy2 import mpz

from compute.ceremony import (
    Confirmation,
    backups_for,
    check_published_context,
    expected_context,
    make_confirmation,
    make_guardian_keys,
    verify_confirmation,
    verify_received_backups,
)
from compute.constants import Q
from compute.context import make_context
from compute.group import rand_q
from compute.guardian import ElectionPartialKeyBackup
from compute.hashed_elgamal import backup_seed, encrypt_coordinate
from compute.keyceremony import commitment_hash, joint_public_key
from compute.polynomial import compute_polynomial_coordinate

MANIFEST_HASH = mpz(0xABCDEF)


def _guardians(n: int = 4, quorum: int = 3):  # type: ignore[no-untyped-def]
    keys = [make_guardian_keys(f"g{i + 1}", i + 1, quorum) for i in range(n)]
    return keys, [k.share() for k in keys]


def test_rounds_between_guardians_verify_and_make_the_reference_context() -> None:
    keys, public = _guardians()
    sent = {k.owner_id: backups_for(k, public) for k in keys}
    assert all(len(b) == 3 and all(x.designated_id != x.owner_id for x in b) for b in sent.values())
    for receiver in keys:
        mine = [b for bs in sent.values() for b in bs if b.designated_id == receiver.owner_id]
        vs = verify_received_backups(receiver, mine, public)
        assert len(vs) == 3 and all(v.verified and v.verifier_id == receiver.owner_id for v in vs)
    context = expected_context(list(reversed(public)), 3, MANIFEST_HASH)
    assert context == make_context(4, 3, joint_public_key(public), commitment_hash(public), MANIFEST_HASH)
    assert check_published_context(public[0], public, context, MANIFEST_HASH) == []


def test_a_backup_off_the_committed_polynomial_fails_verification() -> None:
    keys, public = _guardians()
    sender, receiver = keys[0], keys[1]
    wrong = compute_polynomial_coordinate(receiver.sequence_order, sender.polynomial) + 1
    forged = ElectionPartialKeyBackup(
        sender.owner_id,
        receiver.owner_id,
        receiver.sequence_order,
        encrypt_coordinate(wrong % Q, receiver.key_pair.public_key, backup_seed("g2", 2)),
    )
    good = [b for b in backups_for(keys[2], public) if b.designated_id == "g2"]
    vs = verify_received_backups(receiver, [forged, *good], public)
    assert [(v.owner_id, v.verified) for v in vs] == [("g1", False), ("g3", True)]
    # A backup addressed to someone else is a failed verification, not a crash.
    other = [b for b in backups_for(keys[2], public) if b.designated_id == "g4"]
    assert [v.verified for v in verify_received_backups(receiver, other, public)] == [False]


def test_a_context_not_made_from_the_published_keys_is_named() -> None:
    _keys, public = _guardians()
    context = expected_context(public, 3, MANIFEST_HASH)
    swapped = dataclasses.replace(context, elgamal_public_key=context.elgamal_public_key * 4 % Q)
    assert "context: elgamal_public_key is not what the published keys make" in check_published_context(
        public[0], public, swapped, MANIFEST_HASH
    )
    impostor = make_guardian_keys("g1", 1, 3).share()
    assert any("own key" in p for p in check_published_context(impostor, public, context, MANIFEST_HASH))


def test_confirmation_needs_the_guardians_own_key_and_this_context() -> None:
    keys, public = _guardians()
    context = expected_context(public, 3, MANIFEST_HASH)
    g1 = keys[0]
    proof = make_confirmation(g1, context)
    assert verify_confirmation("g1", 1, g1.key_pair.public_key, context, proof)
    assert verify_confirmation(
        "g1", 1, g1.key_pair.public_key, context, Confirmation.from_json(proof.to_json())
    )
    # Made with another guardian's key: not a proof for g1's.
    other = dataclasses.replace(keys[1], owner_id="g1", sequence_order=1)
    assert not verify_confirmation(
        "g1", 1, g1.key_pair.public_key, context, make_confirmation(other, context)
    )
    # For another context (another election's keys): not a proof for this one.
    _, public2 = _guardians()
    context2 = expected_context(public2, 3, MANIFEST_HASH)
    assert not verify_confirmation("g1", 1, g1.key_pair.public_key, context, make_confirmation(g1, context2))
    # Bound to the guardian: g1's proof does not confirm for g2, even with g2's slot fields.
    assert not verify_confirmation("g2", 2, g1.key_pair.public_key, context, proof)
    # Any field changed fails.
    for field in ("commitment", "challenge", "response"):
        bad = dataclasses.replace(proof, **{field: (getattr(proof, field) + 1) % Q})
        assert not verify_confirmation("g1", 1, g1.key_pair.public_key, context, bad)
    # A forger without the key, picking u and c first, cannot make the challenge come out.
    u, c = rand_q(), rand_q()
    assert not verify_confirmation("g1", 1, g1.key_pair.public_key, context, Confirmation(mpz(2), c, u))
