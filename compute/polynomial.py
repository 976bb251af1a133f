"""Election polynomials for threshold key sharing, as ``electionguard.election_polynomial``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.constants import ONE, P, Q
from compute.group import from_hex, g_pow_p, pow_p, rand_q, to_hex
from compute.schnorr import SchnorrProof, make_schnorr_proof


@dataclass(slots=True)
class Coefficient:
    value: mpz  # secret a_ij
    commitment: mpz  # K_ij = g^a_ij
    proof: SchnorrProof

    def to_json(self) -> dict[str, Any]:
        return {
            "value": to_hex(self.value),
            "commitment": to_hex(self.commitment),
            "proof": self.proof.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Coefficient:
        return cls(from_hex(d["value"]), from_hex(d["commitment"]), SchnorrProof.from_json(d["proof"]))


@dataclass(slots=True)
class ElectionPolynomial:
    coefficients: list[Coefficient]

    def get_commitments(self) -> list[mpz]:
        return [c.commitment for c in self.coefficients]

    def get_proofs(self) -> list[SchnorrProof]:
        return [c.proof for c in self.coefficients]

    def to_json(self) -> dict[str, Any]:
        return {"coefficients": [c.to_json() for c in self.coefficients]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ElectionPolynomial:
        return cls([Coefficient.from_json(c) for c in d["coefficients"]])


def generate_polynomial(number_of_coefficients: int, nonce: mpz | None = None) -> ElectionPolynomial:
    """Random coefficients (or nonce + i, the reference's testing shortcut) with commitments and proofs."""
    coefficients = []
    for i in range(number_of_coefficients):
        value = mpz(nonce + i) % Q if nonce is not None else rand_q()
        commitment = g_pow_p(value)
        coefficients.append(Coefficient(value, commitment, make_schnorr_proof(value, commitment)))
    return ElectionPolynomial(coefficients)


def compute_polynomial_coordinate(exponent_modifier: int, polynomial: ElectionPolynomial) -> mpz:
    """P(x) mod q by Horner's rule (the reference sums a_i x^i; same value)."""
    x = mpz(exponent_modifier)
    acc = mpz(0)
    for c in reversed(polynomial.coefficients):
        acc = (acc * x + c.value) % Q
    return acc


def commitment_product(exponent_modifier: int, commitments: list[mpz]) -> mpz:
    """prod_j K_j^(x^j): g^P(x) from the public commitments (the recovery public key for x)."""
    x = mpz(exponent_modifier)
    acc, xi = ONE, ONE
    for k in commitments:
        acc = acc * pow_p(k, xi) % P
        xi = xi * x % Q
    return acc


def verify_polynomial_coordinate(coordinate: mpz, exponent_modifier: int, commitments: list[mpz]) -> bool:
    """g^coordinate equals the product of the commitments raised to the powers of x."""
    return g_pow_p(coordinate) == commitment_product(exponent_modifier, commitments)


def compute_lagrange_coefficient(coordinate: int, *degrees: int) -> mpz:
    """w = prod(x_j) / prod(x_j - x_i) mod q over the other available guardians' sequence orders."""
    numerator, denominator = ONE, ONE
    for d in degrees:
        numerator = numerator * d % Q
        denominator = denominator * (d - coordinate) % Q
    return numerator * pow(int(denominator), -1, int(Q)) % Q
