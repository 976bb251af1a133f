"""Fixed-base tables, multi-exponentiation, Chaum-Pedersen proofs and their batch verification."""

from __future__ import annotations

import dataclasses
import secrets

import gmpy2
import pytest
from gmpy2 import mpz

from compute.constants import G, P, Q
from compute.elgamal import Ciphertext, add, encrypt
from compute.fixedbase import FixedBaseTable, fixed_pow, table_for
from compute.group import g_pow_p, rand_q
from compute.multiexp import multiexp
from compute.selection_proofs import (
    ConstantChaumPedersenProof,
    DisjunctiveChaumPedersenProof,
    ProofBatch,
    is_qr_element,
    make_constant_chaum_pedersen,
    make_disjunctive_chaum_pedersen,
    subgroup_batch_ok,
    verify_constant,
    verify_disjunctive,
)

SECRET = rand_q()
K = g_pow_p(SECRET)
QBAR = rand_q()


def _order_r_element() -> mpz:
    """A quadratic residue outside the order-q subgroup (it has order R): passes Jacobi, not x^q = 1."""
    return gmpy2.powmod(rand_q() + 7, 2 * Q, P)


@pytest.mark.parametrize("window", [4, 7, 8, 10])
def test_fixed_base_table_equals_powmod(window: int):
    base = g_pow_p(rand_q())
    t = FixedBaseTable(base, window)
    for e in [0, 1, 2, 255, 256, Q - 1, Q, 2**256 - 1, 2**256, 2**300 + 5, *[rand_q() for _ in range(5)]]:
        assert t.pow(e) == gmpy2.powmod(base, e, P), e


def test_g_pow_p_and_fixed_pow_use_tables_and_agree():
    for e in (0, 1, rand_q()):
        assert g_pow_p(e) == gmpy2.powmod(G, e, P)
        assert fixed_pow(K, e) == gmpy2.powmod(K, e, P)
    assert table_for(K) is table_for(K)


@pytest.mark.parametrize("n,bits", [(1, 256), (2, 64), (17, 64), (40, 256), (60, 80)])
def test_multiexp_equals_naive(n: int, bits: int):
    bases = [g_pow_p(rand_q()) for _ in range(n)]
    exps = [secrets.randbits(bits) for _ in range(n)]
    exps[0] = 0  # zero exponents are skipped, not mishandled
    naive = mpz(1)
    for b, e in zip(bases, exps, strict=True):
        naive = naive * gmpy2.powmod(b, e, P) % P
    assert multiexp(bases, exps) == naive
    assert multiexp(bases, exps, window=3) == naive
    mixed = [secrets.randbits(64) if i % 2 else secrets.randbits(256) for i in range(n)]
    naive = mpz(1)
    for b, e in zip(bases, mixed, strict=True):
        naive = naive * gmpy2.powmod(b, e, P) % P
    assert multiexp(bases, mixed) == naive


def test_multiexp_edge_cases():
    assert multiexp([], []) == 1
    assert multiexp([G], [0]) == 1
    with pytest.raises(ValueError):
        multiexp([G], [-1])
    with pytest.raises(ValueError):
        multiexp([G, G], [1])


def _selection(vote: int) -> tuple[Ciphertext, DisjunctiveChaumPedersenProof]:
    r = rand_q()
    ct = encrypt(vote, r, K)
    return ct, make_disjunctive_chaum_pedersen(ct, r, K, QBAR, rand_q(), vote)


def test_disjunctive_proofs_verify_exactly_and_in_batch():
    items = [_selection(v) for v in (0, 1, 1, 0)]
    batch = ProofBatch(K, QBAR)
    for ct, proof in items:
        assert verify_disjunctive(proof, ct, K, QBAR)
        assert batch.add_disjunctive(ct, proof) is None
    assert batch.check()
    assert DisjunctiveChaumPedersenProof.from_json(items[0][1].to_json()) == items[0][1]


def test_proof_is_deterministic_in_its_seed():
    r, seed = rand_q(), rand_q()
    ct = encrypt(1, r, K)
    assert make_disjunctive_chaum_pedersen(ct, r, K, QBAR, seed, 1) == make_disjunctive_chaum_pedersen(
        ct, r, K, QBAR, seed, 1
    )


FIELDS = [
    "proof_zero_pad",
    "proof_zero_data",
    "proof_one_pad",
    "proof_one_data",
    "proof_zero_challenge",
    "proof_one_challenge",
    "challenge",
    "proof_zero_response",
    "proof_one_response",
]


@pytest.mark.parametrize("field", FIELDS)
def test_any_tampered_field_is_rejected(field: str):
    ct, proof = _selection(1)
    modulus = P if field.endswith(("pad", "data")) else Q
    bad = dataclasses.replace(proof, **{field: (getattr(proof, field) * 4 + 1) % modulus})
    assert not verify_disjunctive(bad, ct, K, QBAR)
    batch = ProofBatch(K, QBAR)
    others = [_selection(0) for _ in range(2)]
    for c, p in others:
        batch.add_disjunctive(c, p)
    err = batch.add_disjunctive(ct, bad)
    assert err is not None or not batch.check()


def test_proof_of_a_two_is_rejected():
    # an encryption of 2 with a proof made as if it were 1: the equations cannot hold
    r = rand_q()
    ct = encrypt(2, r, K)
    proof = make_disjunctive_chaum_pedersen(ct, r, K, QBAR, rand_q(), 1)
    assert not verify_disjunctive(proof, ct, K, QBAR)
    batch = ProofBatch(K, QBAR)
    assert batch.add_disjunctive(ct, proof) is None  # nothing cheap catches it
    assert not batch.check()
    with pytest.raises(ValueError):
        make_disjunctive_chaum_pedersen(ct, r, K, QBAR, rand_q(), 2)


def test_a_tampered_ciphertext_breaks_its_proof():
    ct, proof = _selection(0)
    moved = Ciphertext(ct.pad, ct.data * G % P)  # now an encryption of 1 with the proof of a 0
    assert not verify_disjunctive(proof, moved, K, QBAR)
    batch = ProofBatch(K, QBAR)
    # the challenge hash covers the ciphertext, so the cheap precheck already fails
    assert batch.add_disjunctive(moved, proof) == "challenge is not the hash of the proof"


def _contest(
    votes: list[int], constant: int
) -> tuple[list[Ciphertext], Ciphertext, ConstantChaumPedersenProof]:
    rs = [rand_q() for _ in votes]
    cts = [encrypt(v, r, K) for v, r in zip(votes, rs, strict=True)]
    acc = add(cts)
    proof = make_constant_chaum_pedersen(acc, constant, sum(rs) % Q, K, rand_q(), QBAR)
    return cts, acc, proof


def test_constant_proof():
    cts, acc, proof = _contest([1, 0, 1, 0], 2)
    assert verify_constant(proof, acc, K, QBAR)
    assert ConstantChaumPedersenProof.from_json(proof.to_json()) == proof
    batch = ProofBatch(K, QBAR)
    assert batch.add_constant(cts, acc, proof) is None
    assert batch.check()
    # claiming another limit, or proving a sum that is not the limit, fails
    wrong = dataclasses.replace(proof, constant=1)
    assert not verify_constant(wrong, acc, K, QBAR)
    batch = ProofBatch(K, QBAR)
    batch.add_constant(cts, acc, wrong)
    assert not batch.check()
    cts, acc, proof = _contest([1, 1, 1, 0], 2)
    assert not verify_constant(proof, acc, K, QBAR)
    batch = ProofBatch(K, QBAR)
    batch.add_constant(cts, acc, proof)
    assert not batch.check()


def test_group_membership_checks():
    x = g_pow_p(rand_q())
    assert is_qr_element(x)
    assert not is_qr_element(P - x)  # p = 3 mod 4: -1 is a non-residue
    assert not is_qr_element(0) and not is_qr_element(P) and not is_qr_element(P + 1)
    outside = x * _order_r_element() % P
    assert is_qr_element(outside)  # the Jacobi symbol alone cannot see the order-R part
    elements = [g_pow_p(rand_q()) for _ in range(6)]
    assert subgroup_batch_ok(elements)
    for _ in range(3):  # fresh randomness each time; a false accept has probability 2^-64
        assert not subgroup_batch_ok([*elements, outside])


def test_batch_detects_order_r_component_in_a_ciphertext():
    # a contest whose selection ciphertexts carry cancelling order-R parts: the constant proof on the
    # accumulation still verifies (the parts cancel), only the subgroup test notices
    u = _order_r_element()
    cts, acc, proof = _contest([1, 0], 1)
    tampered = [
        Ciphertext(cts[0].pad * u % P, cts[0].data),
        Ciphertext(cts[1].pad * gmpy2.invert(u, P) % P, cts[1].data),
    ]
    assert add(tampered) == acc
    batch = ProofBatch(K, QBAR)
    assert batch.add_constant(tampered, acc, proof) is None
    assert not batch.check()
    batch = ProofBatch(K, QBAR)
    batch.add_constant(cts, acc, proof)
    assert batch.check()
