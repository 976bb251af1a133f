"""Chaum-Pedersen proofs on ballot selections, as ``electionguard.chaum_pedersen`` makes and checks them.

- Disjunctive (0 or 1) proof on each selection ciphertext (alpha, beta) = (g^r, g^m K^r):
  c = H(Q', alpha, beta, a0, b0, a1, b1), c = c0 + c1, and
  g^v0 = a0 alpha^c0, g^v1 = a1 alpha^c1, K^v0 = b0 beta^c0, g^c1 K^v1 = b1 beta^c1.
- Constant proof on a contest's accumulated ciphertext (A, B), constant L:
  c = H(Q', A, B, a, b), g^v = a A^c, g^(L c) K^v = b B^c.

``verify_*`` check one proof exactly as the reference does (every element's subgroup membership by a
full exponentiation). ``ProofBatch`` checks many proofs at once by a random linear combination of all
their equations, evaluated with one multi-exponentiation; see ``compute.validate`` for the soundness
argument and the fallback that names the bad ballot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gmpy2
from gmpy2 import mpz

from compute.constants import G, P, Q
from compute.elgamal import Ciphertext
from compute.fixedbase import cached_pow, encryption_pow, fixed_pow
from compute.group import FieldError, g_pow_p, hex_field, int_field, is_valid_residue, to_hex
from compute.hashing import hash_elems
from compute.multiexp import MAX_WINDOW, multiexp_checking_residues
from compute.weights import WEIGHT_BITS, weight

SELECTION_VALUE_USAGE = "Prove selection's value (0 or 1)"
SELECTION_LIMIT_USAGE = "Prove value within selection's limit"


def nonces(seed: mpz, *headers: Any) -> mpz:
    """The seed of the reference's ``Nonces(seed, *headers)``; item i is ``hash_elems(seed', i)``."""
    return hash_elems(seed, *headers) if headers else seed


def nonce_at(seed: mpz, i: int) -> mpz:
    return hash_elems(seed, i)


@dataclass(frozen=True, slots=True)
class DisjunctiveChaumPedersenProof:
    proof_zero_pad: mpz
    proof_zero_data: mpz
    proof_one_pad: mpz
    proof_one_data: mpz
    proof_zero_challenge: mpz
    proof_one_challenge: mpz
    challenge: mpz
    proof_zero_response: mpz
    proof_one_response: mpz
    usage: str = SELECTION_VALUE_USAGE

    _P_FIELDS = ("proof_zero_pad", "proof_zero_data", "proof_one_pad", "proof_one_data")
    _Q_FIELDS = (
        "proof_zero_challenge",
        "proof_one_challenge",
        "challenge",
        "proof_zero_response",
        "proof_one_response",
    )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {f: to_hex(getattr(self, f)) for f in (*self._P_FIELDS, *self._Q_FIELDS)}
        d["usage"] = self.usage
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DisjunctiveChaumPedersenProof:
        """Untrusted JSON: elements in range, and the reference's usage string only (FieldError)."""
        a0, b0, a1, b1 = (hex_field(d, f, P) for f in cls._P_FIELDS)
        c0, c1, c, v0, v1 = (hex_field(d, f, Q) for f in cls._Q_FIELDS)
        return cls(a0, b0, a1, b1, c0, c1, c, v0, v1, usage(d, SELECTION_VALUE_USAGE))


@dataclass(frozen=True, slots=True)
class ConstantChaumPedersenProof:
    pad: mpz
    data: mpz
    challenge: mpz
    response: mpz
    constant: int
    usage: str = SELECTION_LIMIT_USAGE

    def to_json(self) -> dict[str, Any]:
        return {
            "pad": to_hex(self.pad),
            "data": to_hex(self.data),
            "challenge": to_hex(self.challenge),
            "response": to_hex(self.response),
            "constant": self.constant,
            "usage": self.usage,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ConstantChaumPedersenProof:
        """Untrusted JSON: elements in range, the constant within the stored 64 bits, the reference's
        usage string only (FieldError)."""
        return cls(
            hex_field(d, "pad", P),
            hex_field(d, "data", P),
            hex_field(d, "challenge", Q),
            hex_field(d, "response", Q),
            int_field(d, "constant", 0, 2**64 - 1),
            usage(d, SELECTION_LIMIT_USAGE),
        )


def usage(d: dict[str, Any], expected: str) -> str:
    """A proof's ``usage``: the reference's string for that proof (its ``ProofUsage``) or absent. No hash
    or proof covers it, so any other text would be a channel a voter fills to mark a cast ballot."""
    u = d.get("usage", expected)
    if u != expected:
        raise FieldError("usage", f"must be {expected!r}")
    return expected


def _k_pow(k: mpz, e: int) -> mpz:
    # the election key is used for every selection: its (wide) fixed-base table pays for itself
    return encryption_pow(k, e)


def _g_pow(e: int) -> mpz:
    return encryption_pow(G, e)


def make_disjunctive_chaum_pedersen(
    message: Ciphertext, r: mpz, k: mpz, q_ext: mpz, seed: mpz, plaintext: int
) -> DisjunctiveChaumPedersenProof:
    """As the reference's ``make_disjunctive_chaum_pedersen`` (same nonces, so the same proof)."""
    if plaintext not in (0, 1):
        raise ValueError("disjunctive proofs only support plaintexts 0 and 1")
    alpha, beta = message.pad, message.data
    s = nonces(seed, "disjoint-chaum-pedersen-proof")
    n0, n1, n2 = nonce_at(s, 0), nonce_at(s, 1), nonce_at(s, 2)
    if plaintext == 0:
        c1, v, u0 = n0, n1, n2
        a0, b0 = _g_pow(u0), _k_pow(k, u0)
        a1, b1 = _g_pow(v), _k_pow(k, v) * _g_pow(c1) % P
        c = hash_elems(q_ext, alpha, beta, a0, b0, a1, b1)
        c0 = (c - c1) % Q
        v0, v1 = (u0 + c0 * r) % Q, (v + c1 * r) % Q
    else:
        w, v, u1 = n0, n1, n2
        a0, b0 = _g_pow(v), _k_pow(k, v) * _g_pow(w) % P
        a1, b1 = _g_pow(u1), _k_pow(k, u1)
        c = hash_elems(q_ext, alpha, beta, a0, b0, a1, b1)
        c0 = (-w) % Q
        c1 = (c + w) % Q
        v0, v1 = (v + c0 * r) % Q, (u1 + c1 * r) % Q
    return DisjunctiveChaumPedersenProof(a0, b0, a1, b1, mpz(c0), mpz(c1), c, mpz(v0), mpz(v1))


def make_constant_chaum_pedersen(
    message: Ciphertext, constant: int, r: mpz, k: mpz, seed: mpz, hash_header: mpz
) -> ConstantChaumPedersenProof:
    """As the reference's ``make_constant_chaum_pedersen``."""
    alpha, beta = message.pad, message.data
    u = nonce_at(nonces(seed, "constant-chaum-pedersen-proof"), 0)
    a, b = _g_pow(u), _k_pow(k, u)
    c = hash_elems(hash_header, alpha, beta, a, b)
    v = mpz((u + c * r) % Q)
    return ConstantChaumPedersenProof(a, b, c, v, constant)


def _in_q(x: int) -> bool:
    return 0 <= x < Q


def verify_disjunctive(proof: DisjunctiveChaumPedersenProof, message: Ciphertext, k: mpz, q_ext: mpz) -> bool:
    """One proof, checked exactly as the reference's ``DisjunctiveChaumPedersenProof.is_valid``."""
    alpha, beta = message.pad, message.data
    a0, b0, a1, b1 = proof.proof_zero_pad, proof.proof_zero_data, proof.proof_one_pad, proof.proof_one_data
    c0, c1, c = proof.proof_zero_challenge, proof.proof_one_challenge, proof.challenge
    v0, v1 = proof.proof_zero_response, proof.proof_one_response
    if not all(is_valid_residue(x) for x in (alpha, beta, a0, b0, a1, b1)):
        return False
    if not all(_in_q(x) for x in (c0, c1, v0, v1)):
        return False
    if not ((c0 + c1) % Q == c == hash_elems(q_ext, alpha, beta, a0, b0, a1, b1)):
        return False
    return (
        g_pow_p(v0) == a0 * gmpy2.powmod(alpha, c0, P) % P
        and g_pow_p(v1) == a1 * gmpy2.powmod(alpha, c1, P) % P
        and fixed_pow(k, v0) == b0 * gmpy2.powmod(beta, c0, P) % P
        and g_pow_p(c1) * fixed_pow(k, v1) % P == b1 * gmpy2.powmod(beta, c1, P) % P
    )


def verify_constant(proof: ConstantChaumPedersenProof, message: Ciphertext, k: mpz, q_ext: mpz) -> bool:
    """One proof, checked exactly as the reference's ``ConstantChaumPedersenProof.is_valid``."""
    alpha, beta = message.pad, message.data
    a, b, c, v, L = proof.pad, proof.data, proof.challenge, proof.response, proof.constant
    if not all(is_valid_residue(x) for x in (alpha, beta, a, b)):
        return False
    if not (_in_q(c) and _in_q(v) and 0 <= L < min(Q, 1_000_000_000)):
        return False
    if c != hash_elems(q_ext, alpha, beta, a, b):
        return False
    return (
        g_pow_p(v) == a * gmpy2.powmod(alpha, c, P) % P
        and g_pow_p(c * L % Q) * fixed_pow(k, v) % P == b * gmpy2.powmod(beta, c, P) % P
    )


def is_qr_element(x: int) -> bool:
    """0 < x < p and a quadratic residue: membership of the subgroup of order R*q (26 us, not 1.1 ms)."""
    return 0 < x < P and gmpy2.jacobi(x, P) == 1


def batch_window(short_terms: int, long_terms: int = 0, long_bits: int = 256) -> int:
    """The Pippenger window for ``short_terms`` exponents of 64 bits and ``long_terms`` of ``long_bits``,
    from the same cost model as ``compute.multiexp.choose_window`` (one multiply per non-zero digit,
    2^(c+1) per window for its buckets, c squarings) but from the two counts: choose_window sums over every
    exponent for each of 15 widths, about a tenth of a batch's time when it is not given the window."""

    def cost(c: int) -> float:
        digits = short_terms * -(-WEIGHT_BITS // c) + long_terms * -(-long_bits // c)
        nwin = -(-(long_bits if long_terms else WEIGHT_BITS) // c)
        return digits * (1 - 2.0**-c) + nwin * (2 ** (c + 1) + c)

    return min(range(2, MAX_WINDOW + 1), key=cost)


class ProofBatch:
    """Accumulates the verification equations of many proofs into one random linear combination.

    ``add_*`` do the cheap checks at once (ranges, challenge hashes) and return an error string, or
    None; ``check()`` then checks every element's quadratic residuosity and evaluates every equation added
    so far together: the subgroup test of the selection ciphertexts and the combined Chaum-Pedersen
    equation.
    """

    __slots__ = ("g_exp", "k", "k_exp", "long_terms", "q_ext", "short_bases", "short_exps", "sub_terms")

    def __init__(self, k: mpz, q_ext: mpz) -> None:
        self.k = k
        self.q_ext = q_ext
        self.g_exp = 0
        self.k_exp = 0
        # bases whose order-q membership this batch's subgroup test establishes: exponents reduced mod q
        self.long_terms: dict[mpz, int] = {}
        # other bases (only known to be quadratic residues): short exponents, never reduced
        self.short_bases: list[mpz] = []
        self.short_exps: list[int] = []
        self.sub_terms: dict[mpz, int] = {}

    def __len__(self) -> int:
        return len(self.short_bases)

    def _subgroup(self, x: mpz) -> None:
        if x not in self.sub_terms:
            self.sub_terms[x] = weight()

    def _long(self, x: mpz, e: int) -> None:
        self.long_terms[x] = self.long_terms.get(x, 0) + e

    def precheck_disjunctive(
        self, message: Ciphertext, proof: DisjunctiveChaumPedersenProof, residues: bool = False
    ) -> str | None:
        """The checks that need no exponentiation: element ranges, challenge hash; with ``residues``, each
        element's Jacobi symbol too (to name the element: ``check`` tests them all)."""
        alpha, beta = message.pad, message.data
        a0, b0 = proof.proof_zero_pad, proof.proof_zero_data
        a1, b1 = proof.proof_one_pad, proof.proof_one_data
        c0, c1, c = proof.proof_zero_challenge, proof.proof_one_challenge, proof.challenge
        named = (
            ("ciphertext.pad", alpha),
            ("ciphertext.data", beta),
            ("proof_zero_pad", a0),
            ("proof_zero_data", b0),
            ("proof_one_pad", a1),
            ("proof_one_data", b1),
        )
        for name, x in named:
            if not (is_qr_element(x) if residues else 0 < x < P):
                return f"{name} is not in the group"
        if not all(_in_q(x) for x in (c0, c1, c, proof.proof_zero_response, proof.proof_one_response)):
            return "a challenge or response is out of range"
        if (c0 + c1) % Q != c:
            return "challenges do not add up"
        if c != hash_elems(self.q_ext, alpha, beta, a0, b0, a1, b1):
            return "challenge is not the hash of the proof"
        return None

    def precheck_constant(
        self, accumulation: Ciphertext, proof: ConstantChaumPedersenProof, residues: bool = False
    ) -> str | None:
        a, b, c, v, L = proof.pad, proof.data, proof.challenge, proof.response, proof.constant
        for name, x in (("proof.pad", a), ("proof.data", b)):
            if not (is_qr_element(x) if residues else 0 < x < P):
                return f"constant {name} is not in the group"
        if not (_in_q(c) and _in_q(v)):
            return "constant proof challenge or response out of range"
        if not 0 <= L < 1_000_000_000:
            return "constant out of range"
        if c != hash_elems(self.q_ext, accumulation.pad, accumulation.data, a, b):
            return "constant proof challenge is not the hash of the proof"
        return None

    def add_disjunctive(
        self, message: Ciphertext, proof: DisjunctiveChaumPedersenProof, prechecked: bool = False
    ) -> str | None:
        """Add one selection proof; ``prechecked`` skips the cheap checks already passed once."""
        if not prechecked:
            err = self.precheck_disjunctive(message, proof)
            if err:
                return err
        alpha, beta = message.pad, message.data
        c0, c1 = proof.proof_zero_challenge, proof.proof_one_challenge
        v0, v1 = proof.proof_zero_response, proof.proof_one_response
        r1, r2, r3, r4 = weight(), weight(), weight(), weight()
        self.short_bases += (
            proof.proof_zero_pad,
            proof.proof_one_pad,
            proof.proof_zero_data,
            proof.proof_one_data,
        )
        self.short_exps += (r1, r2, r3, r4)
        self._long(alpha, r1 * c0 + r2 * c1)
        self._long(beta, r3 * c0 + r4 * c1)
        self._subgroup(alpha)
        self._subgroup(beta)
        self.g_exp += r1 * v0 + r2 * v1 + r4 * c1
        self.k_exp += r3 * v0 + r4 * v1
        return None

    def add_constant(
        self,
        selections: list[Ciphertext],
        accumulation: Ciphertext,
        proof: ConstantChaumPedersenProof,
        prechecked: bool = False,
    ) -> str | None:
        """Add one contest proof. ``accumulation`` must be the product of ``selections`` (the caller
        checks the stated one); the selections join this batch's subgroup test."""
        if not prechecked:
            err = self.precheck_constant(accumulation, proof)
            if err:
                return err
        c, v, L = proof.challenge, proof.response, proof.constant
        t1, t2 = weight(), weight()
        self.short_bases += (proof.pad, proof.data)
        self.short_exps += (t1, t2)
        # A^(t1 c) = prod alpha_s^(t1 c): folded into the selection bases, so (A, B) cost nothing
        for s in selections:
            self._long(s.pad, t1 * c)
            self._long(s.data, t2 * c)
            self._subgroup(s.pad)
            self._subgroup(s.data)
        self.g_exp += t1 * v + t2 * L * c
        self.k_exp += t2 * v
        return None

    def check(self, by_buckets: bool | None = None) -> bool:
        """True if every element added is a quadratic residue, every selection ciphertext has order q and
        every equation holds (a false True has probability <= 3 * 2^-64), in one multi-exponentiation:
        the commitments under their equation weights r, each ciphertext element x under its equations'
        exponent mod q plus s_x * q, its subgroup weight s_x times q (compute.validate, step 2). The residues
        come from the Jacobi symbols of its buckets where that costs less than one per element
        (``by_buckets`` None), else one per element; ``by_buckets`` True or False forces either
        (compute.validate, step 1)."""
        if not self.short_bases and not self.long_terms:
            return True
        cts = list(dict.fromkeys([*self.long_terms, *self.sub_terms]))
        window = batch_window(len(self.short_bases), len(cts), 256 + WEIGHT_BITS)
        bases = self.short_bases + cts
        long, sub = self.long_terms, self.sub_terms
        exps = self.short_exps + [long.get(x, 0) % Q + sub.get(x, 0) * Q for x in cts]
        lhs = multiexp_checking_residues(bases, exps, bases, WEIGHT_BITS, window, by_buckets)
        if lhs is None:
            return False
        # two exponentiations per batch: a table only if the process has one (an encrypting API process)
        rhs = cached_pow(G, self.g_exp % Q) * cached_pow(self.k, self.k_exp % Q) % P
        return bool(lhs == rhs)
