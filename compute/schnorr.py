"""Schnorr proofs of knowledge of a secret coefficient, as ``electionguard.schnorr``, and their batch
check.

The JSON has no ``name`` field: the reference sets it outside the dataclass fields, so
``to_raw`` never writes it.

``invalid_proofs`` checks many proofs at once (a record's guardians have quorum proofs each), as
``compute.chaum_pedersen`` checks shares: the ranges and challenge hashes one by one; every key k in the
order-q subgroup and every commitment h a quadratic residue; then, with independent 64-bit weights w,
g^(sum w u) = prod h^w k^(w c), all in one multi-exponentiation (``combination_holds``: each k's subgroup
weight s_k q is folded in, as the shares' are). The exponents of g and k may be reduced mod q (both are in
C_q); h keeps its unreduced weight, so each D = g^u h^-1 k^-c lies in QR = C_q x C_R, both of prime order
above 2^64, and a false proof passes with probability at most 2^-64 (3 * 2^-64 with the residues and the
subgroup). A failing batch is checked proof by proof, so that the problems name each bad one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.chaum_pedersen import add_term, combination_holds
from compute.constants import P, Q
from compute.group import from_hex, g_pow_p, in_p, in_q, is_valid_residue, pow_p, rand_q, to_hex
from compute.hashing import hash_elems
from compute.weights import weight

SECRET_VALUE_USAGE = "Prove knowledge of secret value"


@dataclass(slots=True)
class SchnorrProof:
    public_key: mpz  # k
    commitment: mpz  # h
    challenge: mpz  # c
    response: mpz  # u
    usage: str = SECRET_VALUE_USAGE

    def is_valid(self) -> bool:
        """The reference's checks: k in the subgroup, h and u in range, c = H(k, h), g^u = h k^c."""
        k, h, u = self.public_key, self.commitment, self.response
        if not (is_valid_residue(k) and in_p(h) and in_q(u)):
            return False
        if hash_elems(k, h) != self.challenge:
            return False
        return g_pow_p(u) == h * pow_p(k, self.challenge) % P

    def to_json(self) -> dict[str, Any]:
        return {
            "public_key": to_hex(self.public_key),
            "commitment": to_hex(self.commitment),
            "challenge": to_hex(self.challenge),
            "response": to_hex(self.response),
            "usage": self.usage,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SchnorrProof:
        return cls(
            from_hex(d["public_key"]),
            from_hex(d["commitment"]),
            from_hex(d["challenge"]),
            from_hex(d["response"]),
            d.get("usage", SECRET_VALUE_USAGE),
        )


def invalid_proofs(proofs: Sequence[SchnorrProof]) -> list[int]:
    """The indices of the proofs that ``SchnorrProof.is_valid`` refuses, checked in one batch (the module
    docstring) and one by one only when the batch fails."""
    bad = {i for i, p in enumerate(proofs) if not _cheap_ok(p)}
    rest = [i for i in range(len(proofs)) if i not in bad]
    if len(rest) > 2 and _batch_holds([proofs[i] for i in rest]):
        return sorted(bad)
    return sorted(bad | {i for i in rest if not proofs[i].is_valid()})


def _cheap_ok(p: SchnorrProof) -> bool:
    return in_p(p.commitment) and in_q(p.response) and hash_elems(p.public_key, p.commitment) == p.challenge


def _batch_holds(proofs: Sequence[SchnorrProof]) -> bool:
    """g^(sum w u) = prod h^w k^(w c) k^(s_k q), with every k in the order-q subgroup and every h a
    quadratic residue (``compute.chaum_pedersen.combination_holds``)."""
    equations: dict[int, list[Any]] = {}
    g_exp = 0
    for p in proofs:
        w = weight()
        g_exp += w * p.response
        add_term(equations, p.commitment, w)
        add_term(equations, p.public_key, w * p.challenge)
    return combination_holds(equations, [p.commitment for p in proofs], [p.public_key for p in proofs], g_exp)


def make_schnorr_proof(secret_key: mpz, public_key: mpz, r: mpz | None = None) -> SchnorrProof:
    """Prove knowledge of ``secret_key`` with ``public_key = g^secret_key``; ``r`` is the nonce."""
    if r is None:
        r = rand_q()
    h = g_pow_p(r)
    c = hash_elems(public_key, h)
    return SchnorrProof(public_key, h, c, mpz(r + secret_key * c) % Q)
