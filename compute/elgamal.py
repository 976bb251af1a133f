"""Exponential ElGamal over the standard group, as ``electionguard.elgamal``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gmpy2 import mpz

from compute.constants import ONE, P
from compute.group import from_hex, g_pow_p, pow_p, to_hex
from compute.hashing import hash_elems


@dataclass(frozen=True, slots=True)
class Ciphertext:
    """(pad, data) = (g^r, g^m * K^r)."""

    pad: mpz
    data: mpz

    def crypto_hash(self) -> mpz:
        return hash_elems(self.pad, self.data)

    def to_json(self) -> dict[str, str]:
        return {"pad": to_hex(self.pad), "data": to_hex(self.data)}

    @classmethod
    def from_json(cls, d: dict[str, str]) -> Ciphertext:
        return cls(from_hex(d["pad"]), from_hex(d["data"]))

    def __add__(self, other: Ciphertext) -> Ciphertext:
        return Ciphertext(self.pad * other.pad % P, self.data * other.data % P)


IDENTITY = Ciphertext(ONE, ONE)


@dataclass(frozen=True, slots=True)
class KeyPair:
    secret_key: mpz
    public_key: mpz


def keypair_from_secret(secret: int) -> KeyPair:
    return KeyPair(mpz(secret), g_pow_p(secret))


def encrypt(message: int, nonce: int, public_key: int) -> Ciphertext:
    """Encrypt a small non-negative integer; the fixed-base tables in compute.fixedbase speed this up."""
    return Ciphertext(g_pow_p(nonce), g_pow_p(message) * pow_p(public_key, nonce) % P)


def add(ciphertexts: Iterable[Ciphertext]) -> Ciphertext:
    pad, data = ONE, ONE
    for c in ciphertexts:
        pad = pad * c.pad % P
        data = data * c.data % P
    return Ciphertext(pad, data)
