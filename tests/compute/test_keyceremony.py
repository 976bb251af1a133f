"""Key ceremony: polynomials, Schnorr proofs, backups, joint key, commitment hash, records' JSON."""

from __future__ import annotations

import json

import gmpy2
import pytest
from gmpy2 import mpz

from compute.constants import P, Q
from compute.group import g_pow_p, rand_q
from compute.guardian import GuardianRecord, PrivateGuardianRecord
from compute.hashed_elgamal import (
    backup_seed,
    decode_coordinate,
    encode_coordinate,
    encrypt_coordinate,
    hashed_elgamal_encrypt,
)
from compute.hashing import hash_elems
from compute.keyceremony import (
    KeyCeremonyError,
    commitment_hash,
    joint_public_key,
    run_key_ceremony,
    verify_backup,
    verify_public_key,
)
from compute.polynomial import (
    compute_lagrange_coefficient,
    compute_polynomial_coordinate,
    generate_polynomial,
    verify_polynomial_coordinate,
)
from compute.schnorr import SchnorrProof, _batch_holds, invalid_proofs, make_schnorr_proof

MANIFEST_HASH = mpz(0xABCDEF)


@pytest.fixture(scope="module")
def ceremony() -> tuple[list[PrivateGuardianRecord], list[GuardianRecord], object]:
    return run_key_ceremony(5, 3, MANIFEST_HASH)


def test_schnorr_accepts_valid_and_rejects_tampered() -> None:
    s = rand_q()
    proof = make_schnorr_proof(s, g_pow_p(s))
    assert proof.is_valid()
    assert not SchnorrProof(
        proof.public_key, proof.commitment, proof.challenge, (proof.response + 1) % Q
    ).is_valid()
    assert not SchnorrProof(g_pow_p(s + 1), proof.commitment, proof.challenge, proof.response).is_valid()
    assert SchnorrProof.from_json(json.loads(json.dumps(proof.to_json()))) == proof


def _schnorr(key_factor: int = 1, commitment_factor: int = 1, challenge: int | None = None) -> SchnorrProof:
    secret, r = rand_q(), rand_q()
    key, h = g_pow_p(secret) * key_factor % P, g_pow_p(r) * commitment_factor % P
    c = hash_elems(key, h) if challenge is None else mpz(challenge)
    return SchnorrProof(key, h, c, (r + secret * c) % Q)


@pytest.mark.parametrize("by_buckets", [False, True], ids=["per element", "per bucket"])
def test_schnorr_batch_names_each_bad_proof(by_buckets: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("compute.multiexp.residues_by_buckets", lambda window, elements, bits: by_buckets)
    proofs = [_schnorr() for _ in range(9)]
    assert invalid_proofs(proofs) == []
    assert _batch_holds(proofs)
    # a wrong response, a commitment's order-2 twist (re-hashed, so only the equation and the residue see
    # it), a key outside the subgroup
    proofs[2] = SchnorrProof(
        proofs[2].public_key, proofs[2].commitment, proofs[2].challenge, proofs[2].response + 1
    )
    twisted = P - proofs[4].commitment
    proofs[4] = SchnorrProof(
        proofs[4].public_key, twisted, hash_elems(proofs[4].public_key, twisted), proofs[4].response
    )
    proofs[7] = _schnorr(key_factor=P - 1)
    assert invalid_proofs(proofs) == [2, 4, 7]
    assert [i for i, p in enumerate(proofs) if not p.is_valid()] == [2, 4, 7]


@pytest.mark.parametrize("by_buckets", [False, True], ids=["per element", "per bucket"])
def test_schnorr_batch_sees_a_key_with_an_order_r_part(
    by_buckets: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("compute.multiexp.residues_by_buckets", lambda window, elements, bits: by_buckets)
    # k z with h z^-1 (z of order R) and a challenge of 1: g^u = h k^c holds exactly in Z_p^* and no
    # exponent is reduced, so only k's own subgroup weight sees z (the challenge hash would refuse c = 1:
    # _batch_holds is the batch's algebra alone)
    z = gmpy2.powmod(rand_q() + 7, 2 * Q, P)
    good = [_schnorr(challenge=1) for _ in range(6)]
    assert _batch_holds(good)
    for _ in range(4):
        assert not _batch_holds(
            [*good, _schnorr(key_factor=z, commitment_factor=gmpy2.invert(z, P), challenge=1)]
        )


def test_hashed_elgamal_round_trip_and_mac() -> None:
    s = rand_q()
    seed = backup_seed("guardian-x", 4)
    coordinate = rand_q()
    c = encrypt_coordinate(coordinate, g_pow_p(s), seed)
    plain = c.decrypt(s, seed)
    assert plain is not None and decode_coordinate(plain) == coordinate
    assert c.decrypt(s + 1, seed) is None  # wrong key
    assert c.decrypt(s, backup_seed("guardian-x", 5)) is None  # wrong seed
    assert len(encode_coordinate(coordinate)) == 512
    # the reference pads ``data`` back to 512 bytes before checking the MAC, so a short message never
    # decrypts: only the 512-byte padded coordinate round-trips (we keep that behaviour)
    short = hashed_elgamal_encrypt(b"abc", rand_q(), g_pow_p(s), seed)
    assert short.decrypt(s, seed) is None


def test_polynomial_coordinates_and_lagrange() -> None:
    poly = generate_polynomial(3)
    commitments = poly.get_commitments()
    points = {x: compute_polynomial_coordinate(x, poly) for x in (1, 2, 3, 4, 5)}
    for x, y in points.items():
        assert verify_polynomial_coordinate(y, x, commitments)
        assert not verify_polynomial_coordinate((y + 1) % Q, x, commitments)
    # any 3 points give back P(0), the secret
    for subset in ((1, 2, 3), (2, 4, 5), (1, 3, 5)):
        total = (
            sum(compute_lagrange_coefficient(x, *[o for o in subset if o != x]) * points[x] for x in subset)
            % Q
        )
        assert total == poly.coefficients[0].value


def test_ceremony_keys_backups_and_context(ceremony) -> None:
    privates, records, context = ceremony
    assert [r.sequence_order for r in records] == [1, 2, 3, 4, 5]
    secret = sum(p.election_keys.key_pair.secret_key for p in privates) % Q
    assert g_pow_p(secret) == context.elgamal_public_key == joint_public_key(records)
    flat = [c for r in records for c in r.election_commitments]
    assert context.commitment_hash == hash_elems(flat) == commitment_hash(records)
    assert context.manifest_hash == MANIFEST_HASH
    for r in records:
        assert verify_public_key(r.public_key(), 3) == []
    for receiver in privates:
        assert set(receiver.guardian_election_partial_key_backups) == {r.guardian_id for r in records} - {
            receiver.guardian_id
        }
        assert len(receiver.backups_to_share) == 5  # includes its own, as the reference does
        for sender_id in receiver.guardian_election_partial_key_backups:
            x = receiver.coordinate_from(sender_id)
            sender = next(p for p in privates if p.guardian_id == sender_id)
            assert x == compute_polynomial_coordinate(
                receiver.sequence_order, sender.election_keys.polynomial
            )
    assert all(v.verified for p in privates for v in p.guardian_election_partial_key_verifications.values())
    # any 3 guardians' coordinates of guardian 1's polynomial reconstruct guardian 1's secret
    missing = privates[0]
    present = privates[2:5]
    total = 0
    for p in present:
        w = compute_lagrange_coefficient(p.sequence_order, *[o.sequence_order for o in present if o is not p])
        total += w * p.coordinate_from(missing.guardian_id)
    assert total % Q == missing.election_keys.key_pair.secret_key


def test_tampered_backup_and_proof_are_detected(ceremony) -> None:
    privates, records, _ = ceremony
    receiver, sender = privates[1], privates[0]
    backup = receiver.guardian_election_partial_key_backups[sender.guardian_id]
    public = receiver.guardian_election_public_keys[sender.guardian_id]
    assert verify_backup(receiver.election_keys, backup, public).verified
    bad = type(backup).from_json(backup.to_json())
    flipped = "0" if bad.encrypted_coordinate.mac[0] != "0" else "1"
    bad.encrypted_coordinate.mac = flipped + bad.encrypted_coordinate.mac[1:]
    assert not verify_backup(receiver.election_keys, bad, public).verified
    # a backup to the right key but off the polynomial fails the commitment check
    wrong = type(backup)(
        backup.owner_id,
        backup.designated_id,
        backup.designated_sequence_order,
        encrypt_coordinate(
            mpz(12345),
            receiver.election_keys.key_pair.public_key,
            backup_seed(receiver.guardian_id, receiver.sequence_order),
        ),
    )
    assert not verify_backup(receiver.election_keys, wrong, public).verified
    key = records[0].public_key()
    key.coefficient_proofs[1] = key.coefficient_proofs[2]
    assert any("coefficient 1" in p for p in verify_public_key(key, 3))


def test_records_json_round_trip(ceremony) -> None:
    privates, records, context = ceremony
    for p in privates:
        d = json.loads(json.dumps(p.to_json()))
        assert PrivateGuardianRecord.from_json(d).to_json() == d
        assert p.publish().to_json() == next(r for r in records if r.guardian_id == p.guardian_id).to_json()
    for r in records:
        assert GuardianRecord.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert context.elgamal_public_key < P


def test_ceremony_rejects_bad_parameters() -> None:
    with pytest.raises(KeyCeremonyError):
        run_key_ceremony(3, 4, MANIFEST_HASH)
    with pytest.raises(KeyCeremonyError):
        run_key_ceremony(2, 1, MANIFEST_HASH, guardian_ids=["a", "a"])
    _, records, _ = run_key_ceremony(2, 1, MANIFEST_HASH, guardian_ids=["alice", "bob"])
    assert [r.guardian_id for r in records] == ["alice", "bob"]
