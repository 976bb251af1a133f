"""Schnorr proofs of knowledge of a secret coefficient, as ``electionguard.schnorr``.

The JSON has no ``name`` field: the reference sets it outside the dataclass fields, so
``to_raw`` never writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.constants import P, Q
from compute.group import from_hex, g_pow_p, in_p, in_q, is_valid_residue, pow_p, rand_q, to_hex
from compute.hashing import hash_elems

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


def make_schnorr_proof(secret_key: mpz, public_key: mpz, r: mpz | None = None) -> SchnorrProof:
    """Prove knowledge of ``secret_key`` with ``public_key = g^secret_key``; ``r`` is the nonce."""
    if r is None:
        r = rand_q()
    h = g_pow_p(r)
    c = hash_elems(public_key, h)
    return SchnorrProof(public_key, h, c, mpz(r + secret_key * c) % Q)
