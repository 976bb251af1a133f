"""Fixed-base tables, multi-exponentiation, Chaum-Pedersen proofs and their batch verification."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import sys

import gmpy2
import pytest
from gmpy2 import mpz

from compute.chaum_pedersen import (
    ChaumPedersenProof,
    ShareStatement,
    _batch_ok,
    partial_decrypt,
    verify_shares,
)
from compute.constants import G, P, Q
from compute.elgamal import Ciphertext, add, encrypt
from compute.fixedbase import (
    ENCRYPTION_WINDOW,
    FixedBaseTable,
    cached_pow,
    encryption_pow,
    fixed_pow,
    table_for,
)
from compute.group import g_pow_p, rand_q
from compute.hashing import hash_elems
from compute.multiexp import choose_window, multiexp
from compute.selection_proofs import (
    ConstantChaumPedersenProof,
    DisjunctiveChaumPedersenProof,
    ProofBatch,
    batch_window,
    is_qr_element,
    make_constant_chaum_pedersen,
    make_disjunctive_chaum_pedersen,
    verify_constant,
    verify_disjunctive,
)

SECRET = rand_q()
K = g_pow_p(SECRET)
QBAR = rand_q()


def _order_r_element() -> mpz:
    """A quadratic residue outside the order-q subgroup (it has order R): passes Jacobi, not x^q = 1."""
    return gmpy2.powmod(rand_q() + 7, 2 * Q, P)


@pytest.mark.parametrize("window", [4, 7, 8, 10, 12])
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


def test_g_pow_is_plain_until_the_powmods_have_paid_for_the_table():
    # A fresh process: g^e agrees with powmod before and after; small exponents (a tally's counts) never
    # build the table, and 256-bit ones build it once G_POWMOD_BITS_BEFORE_TABLE bits went to powmods.
    code = """
import gmpy2, secrets
from compute import fixedbase
from compute.constants import G, P, Q
for t in range(500):
    assert fixedbase.g_pow(t) == gmpy2.powmod(G, t, P)
assert fixedbase._g_table is None, "small exponents built the table"
plain_calls = 0
for i in range(200):
    plain = fixedbase._g_powmod_bits < fixedbase.G_POWMOD_BITS_BEFORE_TABLE
    plain_calls += plain
    e = (1 << 255) | secrets.randbelow(1 << 255)
    assert fixedbase.g_pow(e) == gmpy2.powmod(G, e, P), i
    assert (fixedbase._g_table is None) == plain, i
assert fixedbase._g_table is not None and 50 < plain_calls <= 100, plain_calls
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_encryption_tables_are_wider_and_agree():
    for e in (0, 1, Q - 1, rand_q()):
        assert encryption_pow(G, e) == gmpy2.powmod(G, e, P)
        assert encryption_pow(K, e) == gmpy2.powmod(K, e, P)
    assert table_for(K, ENCRYPTION_WINDOW).window == ENCRYPTION_WINDOW > 10
    # a batch check's two exponentiations: a table when there is one, else powmod, the same value
    stranger = g_pow_p(rand_q())
    e = rand_q()
    assert cached_pow(stranger, e) == gmpy2.powmod(stranger, e, P)
    assert cached_pow(K, e) == gmpy2.powmod(K, e, P)


@pytest.mark.parametrize("short,long", [(1, 0), (40, 0), (1360, 640), (40_000, 20_000), (0, 3)])
def test_batch_window_is_the_multiexp_cost_models_choice(short: int, long: int):
    # ProofBatch picks its window from two counts; the exponents' own lengths give the same choice
    exps = [(1 << 63) | secrets.randbits(63) for _ in range(short)]
    exps += [(1 << 255) | secrets.randbits(255) for _ in range(long)]
    assert batch_window(short, long) == choose_window(exps)


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
    assert is_qr_element(outside)  # the Jacobi symbol alone cannot see the order-R part (the batch's s*q can)


@pytest.mark.parametrize("by_buckets", [False, True], ids=["per element", "per bucket"])
def test_batch_detects_order_r_component_in_a_ciphertext(by_buckets: bool):
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
    assert not batch.check(by_buckets)
    batch = ProofBatch(K, QBAR)
    batch.add_constant(cts, acc, proof)
    assert batch.check(by_buckets)


# --- what each check of the batch is for: a forged proof that only that check rejects ---------------


def _forged_zero(r: mpz, pad: mpz, a0_factor: int = 1, b0_factor: int = 1) -> DisjunctiveChaumPedersenProof:
    """A proof of a 0 made as ``make_disjunctive_chaum_pedersen`` makes it, for a ciphertext (pad, K^r)
    whose pad the caller chooses and with the real branch's commitments multiplied by the given factors
    before they are hashed: the prover's freedom, to aim at one check at a time."""
    beta = fixed_pow(K, r)
    c1, v, u0 = rand_q(), rand_q(), rand_q()
    a0, b0 = g_pow_p(u0) * a0_factor % P, fixed_pow(K, u0) * b0_factor % P
    a1, b1 = g_pow_p(v), fixed_pow(K, v) * g_pow_p(c1) % P
    c = hash_elems(QBAR, pad, beta, a0, b0, a1, b1)
    c0 = (c - c1) % Q
    return DisjunctiveChaumPedersenProof(
        a0, b0, a1, b1, mpz(c0), mpz(c1), c, mpz((u0 + c0 * r) % Q), mpz((v + c1 * r) % Q)
    )


def _equations_hold_in_zp(ct: Ciphertext, p: DisjunctiveChaumPedersenProof) -> bool:
    """The four verification equations in Z_p^* (no membership test): what the batch combines."""
    alpha, beta = ct.pad, ct.data
    return (
        g_pow_p(p.proof_zero_response)
        == p.proof_zero_pad * gmpy2.powmod(alpha, p.proof_zero_challenge, P) % P
        and g_pow_p(p.proof_one_response)
        == p.proof_one_pad * gmpy2.powmod(alpha, p.proof_one_challenge, P) % P
        and fixed_pow(K, p.proof_zero_response)
        == p.proof_zero_data * gmpy2.powmod(beta, p.proof_zero_challenge, P) % P
        and g_pow_p(p.proof_one_challenge) * fixed_pow(K, p.proof_one_response) % P
        == p.proof_one_data * gmpy2.powmod(beta, p.proof_one_challenge, P) % P
    )


def _rejected_every_time(
    items: list[tuple[Ciphertext, DisjunctiveChaumPedersenProof]], by_buckets: bool, times: int = 16
) -> bool:
    """Whether ``times`` fresh batches of ``items`` (plus valid proofs) all reject: a check that only a
    random weight's parity could catch would let one of them through with probability 1 - 2^-times.
    ``by_buckets``: the Jacobi symbols from the multi-exponentiations' buckets, or one per element."""
    for _ in range(times):
        batch = ProofBatch(K, QBAR)
        for ct, proof in [_selection(0), *items, _selection(1)]:
            if batch.add_disjunctive(ct, proof) is not None:
                break
        else:
            if batch.check(by_buckets):
                return False
    return True


# the batch's residue check both ways: a symbol per element (small batches) or per bucket (large ones)
RESIDUE_MODES = pytest.mark.parametrize("by_buckets", [False, True], ids=["per element", "per bucket"])


@RESIDUE_MODES
def test_batch_rejects_an_order_2_twist_of_a_commitment(by_buckets: bool):
    # a0 -> p - a0 before hashing: the equations then fail by exactly -1 (order 2). A random weight's
    # parity sees that half the time; only the commitment's Jacobi symbol rejects it every time.
    r = rand_q()
    ct = Ciphertext(g_pow_p(r), fixed_pow(K, r))
    forged = _forged_zero(r, ct.pad, a0_factor=P - 1)
    assert not verify_disjunctive(forged, ct, K, QBAR)
    assert _equations_hold_in_zp(Ciphertext(ct.pad, ct.data), _forged_zero(r, ct.pad))
    assert _rejected_every_time([(ct, forged)], by_buckets)


@RESIDUE_MODES
def test_batch_rejects_an_order_2_twist_of_a_ciphertext_whose_equations_hold(by_buckets: bool):
    # (p - alpha, beta) with a proof whose challenges c0, c1 are even: every equation holds exactly in
    # Z_p^*, so only a membership test can reject it (the reference's alpha^q = 1; ours, its Jacobi symbol)
    r = rand_q()
    alpha, beta = g_pow_p(r), fixed_pow(K, r)
    twisted = Ciphertext(P - alpha, beta)
    while True:
        forged = _forged_zero(r, twisted.pad)
        if forged.proof_zero_challenge % 2 == 0 and forged.proof_one_challenge % 2 == 0:
            break
    assert _equations_hold_in_zp(twisted, forged)
    assert not verify_disjunctive(forged, twisted, K, QBAR)
    assert _rejected_every_time([(twisted, forged)], by_buckets)


@RESIDUE_MODES
def test_batch_rejects_two_order_2_twists_that_cancel_in_a_product(by_buckets: bool):
    # two proofs each off by -1: their product is off by (-1)^2 = 1, so a check of the product's sign
    # (odd weights and one Jacobi symbol for the batch) would pass them; each element's symbol does not
    r1, r2 = rand_q(), rand_q()
    ct1 = Ciphertext(g_pow_p(r1), fixed_pow(K, r1))
    ct2 = Ciphertext(g_pow_p(r2), fixed_pow(K, r2))
    f1 = _forged_zero(r1, ct1.pad, a0_factor=P - 1)
    f2 = _forged_zero(r2, ct2.pad, b0_factor=P - 1)
    assert _rejected_every_time([(ct1, f1), (ct2, f2)], by_buckets)


@RESIDUE_MODES
def test_batch_with_one_bad_proof_among_many_is_rejected(by_buckets: bool):
    # a0 times g^k and b0 times g^-k: each equation of the real branch fails, but their errors cancel
    # when they share a weight, so the batch needs independent weights per equation, not per proof
    r, k = rand_q(), rand_q()
    ct = Ciphertext(g_pow_p(r), fixed_pow(K, r))
    forged = _forged_zero(r, ct.pad, a0_factor=g_pow_p(k), b0_factor=g_pow_p(Q - k))
    assert not verify_disjunctive(forged, ct, K, QBAR)
    good = [_selection(i % 2) for i in range(30)]
    for _ in range(4):
        batch = ProofBatch(K, QBAR)
        for c, p in good[:15]:
            assert batch.add_disjunctive(c, p) is None
        assert batch.add_disjunctive(ct, forged) is None  # nothing cheap catches it
        for c, p in good[15:]:
            batch.add_disjunctive(c, p)
        assert not batch.check(by_buckets)
    batch = ProofBatch(K, QBAR)
    for c, p in good:
        batch.add_disjunctive(c, p)
    assert batch.check(by_buckets)


# --- decryption shares: which membership terms the caller may vouch for -------------------------------


def _shares(q_hash: mpz, n: int = 8) -> list[ShareStatement]:
    s = rand_q()
    out = []
    for i in range(n):
        ct = encrypt(i % 2, rand_q(), K)
        m, proof = partial_decrypt(ct, s, q_hash)
        out.append(ShareStatement(f"share {i}", ct, g_pow_p(s), m, proof))
    return out


@RESIDUE_MODES
def test_share_of_a_target_outside_the_subgroup_is_rejected_unless_the_caller_checked_it(
    by_buckets: bool, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("compute.multiexp.residues_by_buckets", lambda window, elements, bits: by_buckets)
    # Honest proofs for targets outside the subgroup: (A, p - B), whose B no equation contains, and
    # (A u, B) with u of order R, where every equation holds exactly in Z_p^*. Only the targets'
    # membership terms see the first; with targets_checked those terms are the caller's (it validated
    # the ballots the target comes from), so the first then passes: what the flag hands over.
    q_hash = rand_q()
    statements = _shares(q_hash)
    assert verify_shares(statements, q_hash) == []
    assert verify_shares(statements, q_hash, targets_checked=True) == []
    for i, odd in (
        (3, Ciphertext(statements[3].message.pad, P - statements[3].message.data)),
        (5, Ciphertext(statements[5].message.pad * _order_r_element() % P, statements[5].message.data)),
    ):
        secret = rand_q()
        m, proof = partial_decrypt(odd, secret, q_hash)
        forged = [*statements[:i], ShareStatement(statements[i].label, odd, g_pow_p(secret), m, proof)]
        forged += statements[i + 1 :]
        for _ in range(4):  # each alone among valid shares: no other failure sends the batch to bisection
            assert verify_shares(forged, q_hash) == [f"share {i}"]
        if i == 3:
            assert verify_shares(forged, q_hash, targets_checked=True) == []


@RESIDUE_MODES
def test_a_share_or_key_with_an_order_r_part_is_seen_by_its_own_subgroup_term(
    by_buckets: bool, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("compute.multiexp.residues_by_buckets", lambda window, elements, bits: by_buckets)
    # With a challenge of 1 no exponent of the batch is reduced mod q, so K z with a z^-1 (z of order R)
    # keeps g^v = a K^c exact in Z_p^*, and M z with b z^-1 keeps A^v = b M^c: the equations' combination
    # cannot see z, only K's or M's own subgroup weight s q can. (The challenge hash would refuse c = 1:
    # _batch_ok is the batch's algebra alone, what a forger who could aim c would face.)
    secret = rand_q()
    ct = encrypt(1, rand_q(), K)

    def statement(key_factor: mpz, share_factor: mpz) -> ShareStatement:
        u = rand_q()
        a, b = g_pow_p(u) * gmpy2.invert(key_factor, P) % P, gmpy2.powmod(ct.pad, u, P)
        proof = ChaumPedersenProof(a, b * gmpy2.invert(share_factor, P) % P, mpz(1), (u + secret) % Q)
        m = gmpy2.powmod(ct.pad, secret, P) * share_factor % P
        return ShareStatement("share", ct, g_pow_p(secret) * key_factor % P, m, proof)

    good = [statement(mpz(1), mpz(1)) for _ in range(6)]
    assert _batch_ok(good, targets_checked=True)
    z = _order_r_element()
    for bad in (statement(z, mpz(1)), statement(mpz(1), z)):
        for _ in range(4):
            assert not _batch_ok([*good, bad], targets_checked=True)


@RESIDUE_MODES
def test_checked_targets_still_check_each_share_and_its_order_2_twist(
    by_buckets: bool, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("compute.multiexp.residues_by_buckets", lambda window, elements, bits: by_buckets)
    # M' = p - A^s with an even challenge: both equations hold in Z_p^* up to the weights' parity, so
    # only M's own Jacobi symbol rejects it every time; targets_checked drops A's and B's terms only
    q_hash = rand_q()
    statements = _shares(q_hash)
    t = statements[2]
    secret = rand_q()
    while True:
        u = rand_q()
        a, b = g_pow_p(u), gmpy2.powmod(t.message.pad, u, P)
        m_neg = P - gmpy2.powmod(t.message.pad, secret, P)
        c = hash_elems(q_hash, t.message.pad, t.message.data, a, b, m_neg)
        if c % 2 == 0:
            break
    forged = ChaumPedersenProof(a, b, c, (u + c * secret) % Q)
    statements[2] = ShareStatement(t.label, t.message, g_pow_p(secret), m_neg, forged)
    for _ in range(16):
        assert verify_shares(statements, q_hash, targets_checked=True) == ["share 2"]
    wrong = dataclasses.replace(statements[6].proof, response=(statements[6].proof.response + 1) % Q)
    statements[6] = dataclasses.replace(statements[6], proof=wrong)
    assert verify_shares(statements, q_hash, targets_checked=True) == ["share 2", "share 6"]
