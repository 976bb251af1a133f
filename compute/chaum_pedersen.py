"""The generic Chaum-Pedersen proof of a decryption share, as ``electionguard.chaum_pedersen``, and
batch verification of many shares.

A share M = A^s of a ciphertext (A, B) by a key K = g^s comes with (a, b, c, v): a = g^u, b = A^u,
c = H(Q', A, B, a, b, M), v = u + c s. The verifier checks c, the ranges, that A, B, K, M, a, b lie
in the order-q subgroup, and g^v = a K^c, A^v = b M^c.

Batch verification and why it is sound (the group: p - 1 = 2 q R with q and R prime,
``docs/field-notes.md#group-structure``):

1. Each challenge hash and range is checked per proof (cheap).
2. Jacobi: every element (A, B, K, M, a, b) must be in (0, p) with Jacobi symbol (x | p) = 1, which puts x
   in the subgroup QR of order q R, removing the order-2 part. One symbol per element for small batches;
   else the symbols of the buckets of the one multi-exponentiation's low windows (step 3's arrangement),
   where each element's digits are those of its own random 64-bit weight: its subgroup weight s_x q for
   A, B, K, M, its equation weight for a and b: a non-residue passes with probability at most 2^-64
   (docs/batch-verification.md#jacobi-symbols-by-bucket).
3. Subgroup test for A, B, K and M, folded into the equations' product as ``compute.validate``'s step 2
   folds the ballots': each such x gets the exponent (e_x mod q) + s_x q, e_x its equations' exponent and
   s_x an independent uniform 64-bit weight. Write x = y z with y of order dividing q and z = h^e in the
   order-R subgroup: fixing every weight but s_x, the product's C_R part is z^(s_x q) times a constant,
   and z^q has order R > 2^64 when z != 1, so at most one s_x mod R passes: probability at most 2^-64.
   Once every z is 1, x^(s_x q) = 1 and the product is exactly the equations' combination (reducing e_x
   mod q is exact on C_q).
4. Equations: each is "D_i = 1" with D_i = g^v_i a_i^-1 K_i^-c_i and E_i = A_i^v_i b_i^-1 M_i^-c_i,
   all in QR = C_q x C_R (both of prime order > 2^64). With independent uniform 64-bit weights w_i, t_i
   we require prod D_i^w_i E_i^t_i = 1. Projected on C_q or on C_R, fixing all other weights, at most
   one residue of w_j works when D_j's projection is not 1: a false batch passes with probability at
   most 2^-64 (3 * 2^-64 with steps 2 and 3). Exponents of A, K and M (in C_q by step 3) may be reduced
   mod q; a and b keep their
   unreduced 64-bit weights, which is why they need no subgroup test: once the equations hold,
   a = g^v K^-c and b = A^v M^-c are in C_q anyway. Equal bases (one ciphertext pad for many
   guardians, one key for many selections) are merged, which only changes how the product is computed.
   The check is g^(sum w v) = prod a^w K^(w c) b^t M^(t c) A^(-t v) x^(s_x q): one multi-exponentiation
   and one power of g (``combination_holds``, which ``compute.schnorr`` uses too).
A failing batch is bisected (each half re-checked with fresh weights) down to a few proofs that are
checked one by one, so that every bad share is named.

5. ``targets_checked``: the target's A and B are the election's aggregate (a product of validated cast
   ballots' ciphertexts) or a validated ballot's ciphertexts, so a caller that has validated them may say
   so and their Jacobi symbols and subgroup terms go (2 of about 11 symbols and 2 of 5 subgroup terms per
   selection at quorum 3). A's exponent is still reduced mod q, which is exact exactly because A is in C_q.
   K, M, a and b are the share's own and always checked (``docs/batch-verification.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.constants import G, P, Q
from compute.elgamal import Ciphertext
from compute.fixedbase import cached_pow
from compute.group import from_hex, g_pow_p, in_q, is_valid_residue, pow_p, rand_q, to_hex
from compute.hashing import hash_elems
from compute.multiexp import multiexp_checking_residues
from compute.weights import WEIGHT_BITS, weight

SECRET_VALUE_USAGE = "Prove knowledge of secret value"


@dataclass(slots=True)
class ChaumPedersenProof:
    pad: mpz  # a
    data: mpz  # b
    challenge: mpz  # c
    response: mpz  # v
    usage: str = SECRET_VALUE_USAGE

    def to_json(self) -> dict[str, Any]:
        return {
            "pad": to_hex(self.pad),
            "data": to_hex(self.data),
            "challenge": to_hex(self.challenge),
            "response": to_hex(self.response),
            "usage": self.usage,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ChaumPedersenProof:
        return cls(
            from_hex(d["pad"]),
            from_hex(d["data"]),
            from_hex(d["challenge"]),
            from_hex(d["response"]),
            d.get("usage", SECRET_VALUE_USAGE),
        )

    def is_valid(self, message: Ciphertext, k: mpz, m: mpz, q: mpz) -> bool:
        """Exactly the reference's checks, one proof at a time."""
        alpha, beta = message.pad, message.data
        a, b, c, v = self.pad, self.data, self.challenge, self.response
        if not (in_q(c) and in_q(v) and in_q(q)):
            return False
        if c != hash_elems(q, alpha, beta, a, b, m):
            return False
        if not all(is_valid_residue(x) for x in (alpha, beta, k, m, a, b)):
            return False
        return g_pow_p(v) == a * pow_p(k, c) % P and pow_p(alpha, v) == b * pow_p(m, c) % P


def make_chaum_pedersen(
    message: Ciphertext, s: mpz, m: mpz, seed: mpz, hash_header: mpz
) -> ChaumPedersenProof:
    """Proof that m = A^s for the key g^s; the nonce is derived from ``seed`` as the reference does."""
    u = hash_elems(hash_elems(seed, "constant-chaum-pedersen-proof"), 0)
    a = g_pow_p(u)
    b = pow_p(message.pad, u)
    c = hash_elems(hash_header, message.pad, message.data, a, b, m)
    return ChaumPedersenProof(a, b, c, (u + c * s) % Q)


def partial_decrypt(
    message: Ciphertext, secret: mpz, extended_base_hash: mpz
) -> tuple[mpz, ChaumPedersenProof]:
    """M = A^s with its proof (s is a guardian's key or its coordinate of a missing guardian's key)."""
    m = pow_p(message.pad, secret)
    return m, make_chaum_pedersen(message, secret, m, rand_q(), extended_base_hash)


# --- batch verification -------------------------------------------------------------------------


def combination_holds(
    equations: dict[int, list[Any]], commitments: Sequence[mpz], members: Sequence[mpz], g_exponent: int
) -> bool:
    """One multi-exponentiation for a batch: prod x^(e_x mod q + s_x q) = g^g_exponent, where
    ``equations`` maps each distinct base (by value) to ``[base, e_x]``, its weighted equations' exponent
    arranged on this side (``add_term``), and every one of ``members`` gets its own subgroup weight s_x
    (module docstring, step 3). The commitments and the members must be in (0, p) and quadratic residues:
    a commitment's exponent is its own unreduced weight, a member's low 64 bits are s_x q, so the buckets
    can vouch for them (``multiexp_checking_residues``). Reducing e_x mod q is exact for a base in C_q,
    which every base with more than a commitment's weight must be (a member, or a target the caller
    vouches for)."""
    residues = [*commitments, *members]
    if any(not 0 < x < P for x in residues):
        return False
    subgroup: dict[int, int] = {}
    for x in members:
        key = int(x)
        if key not in subgroup:
            subgroup[key] = weight()
            equations.setdefault(key, [x, 0])
    bases = [b for b, _ in equations.values()]
    exponents = [e % Q + subgroup.get(key, 0) * Q for key, (_, e) in equations.items()]
    # distinct values only: one symbol each where they are taken per element (a key recurs in every share)
    distinct = list({int(x): x for x in residues}.values())
    product = multiexp_checking_residues(bases, exponents, distinct, WEIGHT_BITS)
    return product is not None and product == cached_pow(G, g_exponent % Q)


def add_term(equations: dict[int, list[Any]], base: mpz, e: int) -> None:
    """Equal bases (one ciphertext pad for many guardians, one key for many selections) share a term."""
    entry = equations.get(int(base))
    if entry is None:
        equations[int(base)] = [base, e]
    else:
        entry[1] += e


@dataclass(slots=True)
class ShareStatement:
    """One share to check: ``label`` names it in problems (guardian, object, selection)."""

    label: str
    message: Ciphertext
    public_key: mpz  # K: the guardian's key or a recovery key
    share: mpz  # M
    proof: ChaumPedersenProof


def _cheap_ok(s: ShareStatement, q_hash: mpz) -> bool:
    p = s.proof
    return (
        in_q(p.challenge)
        and in_q(p.response)
        and p.challenge == hash_elems(q_hash, s.message.pad, s.message.data, p.pad, p.data, s.share)
    )


def _batch_ok(statements: Sequence[ShareStatement], targets_checked: bool = False) -> bool:
    """prod (g^v a^-1 K^-c)^w (A^v b^-1 M^-c)^t = 1 with K, M (and A, B unless ``targets_checked``) in the
    order-q subgroup and every element a quadratic residue (steps 2 to 5), arranged as
    g^(sum w v) = prod a^w K^(w c) b^t M^(t c) A^(-t v) x^(s_x q) in one multi-exponentiation
    (``combination_holds``). A's exponent is reduced mod q, exact as A is in C_q (a member, or vouched for);
    the weights of a and b (sums of 64-bit values) are below q already."""
    commitments = [x for s in statements for x in (s.proof.pad, s.proof.data)]
    if targets_checked:
        members = [x for s in statements for x in (s.public_key, s.share)]
    else:
        members = [x for s in statements for x in (s.message.pad, s.message.data, s.public_key, s.share)]
    equations: dict[int, list[Any]] = {}
    g_exp = 0
    for s in statements:
        w, t = weight(), weight()
        p = s.proof
        g_exp += w * p.response
        add_term(equations, s.message.pad, -t * p.response)
        add_term(equations, p.pad, w)
        add_term(equations, s.public_key, w * p.challenge)
        add_term(equations, p.data, t)
        add_term(equations, s.share, t * p.challenge)
    return combination_holds(equations, commitments, members, g_exp)


def _find_bad(
    statements: Sequence[ShareStatement],
    indices: list[int],
    q_hash: mpz,
    known_bad: bool,
    targets_checked: bool = False,
) -> list[int]:
    """Bisect a failing batch (fresh randomness per half) down to a few proofs, checked one by one:
    about 2 log2(n) batches for one bad share instead of n single checks."""
    if len(indices) <= 4:
        return [
            i
            for i in indices
            if not statements[i].proof.is_valid(
                statements[i].message, statements[i].public_key, statements[i].share, q_hash
            )
        ]
    if not known_bad and _batch_ok([statements[i] for i in indices], targets_checked):
        return []
    mid = len(indices) // 2
    return _find_bad(statements, indices[:mid], q_hash, False, targets_checked) + _find_bad(
        statements, indices[mid:], q_hash, False, targets_checked
    )


def verify_shares(
    statements: Sequence[ShareStatement], extended_base_hash: mpz, targets_checked: bool = False
) -> list[str]:
    """Labels of the shares whose proofs fail (empty when all hold), in input order: one batch, and
    on failure a bisection that names every bad share. ``targets_checked``: the caller has established
    that every statement's ciphertext lies in the order-q subgroup (step 5 of the module docstring)."""
    if not in_q(extended_base_hash):
        return [s.label for s in statements]
    cheap = [_cheap_ok(s, extended_base_hash) for s in statements]
    bad = {i for i, ok in enumerate(cheap) if not ok}
    rest = [i for i, ok in enumerate(cheap) if ok]
    if rest and not _batch_ok([statements[i] for i in rest], targets_checked):
        bad.update(_find_bad(statements, rest, extended_base_hash, True, targets_checked))
    return [statements[i].label for i in sorted(bad)]
