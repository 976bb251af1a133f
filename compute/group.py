"""Arithmetic in the ElectionGuard 1.x standard group (constants in compute.constants): hex and byte
forms, operations mod p and mod q, g^e through compute.fixedbase's table, random exponents.

Elements are plain ``gmpy2.mpz`` values: no wrapper classes on the hot path. Hex follows the
reference package (upper case, padded to an even number of digits) because hashes are taken over it.
"""

from __future__ import annotations

import secrets

import gmpy2
from gmpy2 import mpz

from compute.constants import ONE, ZERO, P, Q
from compute.fixedbase import g_pow


def to_hex(x: int) -> str:
    """The reference's hex form of an element: upper case, even number of digits."""
    h = format(x, "02X")
    return "0" + h if len(h) % 2 else h


def from_hex(s: str) -> mpz:
    """Parse a hex element as the reference writes it (any case, optional leading zero)."""
    return mpz(s, 16) if s else ZERO


def to_bytes_p(x: int) -> bytes:
    """Fixed-width big-endian bytes of an element of Z_p (512 bytes): the compact storage form."""
    return int(x).to_bytes(512, "big")


def to_bytes_q(x: int) -> bytes:
    """Fixed-width big-endian bytes of an element of Z_q (32 bytes)."""
    return int(x).to_bytes(32, "big")


def from_bytes(b: bytes) -> mpz:
    return mpz(int.from_bytes(b, "big"))


def in_q(x: int) -> bool:
    return 0 <= x < Q


def in_p(x: int) -> bool:
    return 0 <= x < P


def is_valid_residue(x: int) -> bool:
    """Membership of the order-q subgroup, as the reference checks it (one full exponentiation)."""
    return 0 <= x < P and gmpy2.powmod(x, Q, P) == 1


def add_q(*xs: int) -> mpz:
    return mpz(sum(xs)) % Q


def sub_q(a: int, b: int) -> mpz:
    return mpz(a - b) % Q


def a_plus_bc_q(a: int, b: int, c: int) -> mpz:
    return mpz(a + b * c) % Q


def mult_q(*xs: int) -> mpz:
    acc = ONE
    for x in xs:
        acc = acc * x % Q
    return acc


def mult_p(*xs: int) -> mpz:
    acc = ONE
    for x in xs:
        acc = acc * x % P
    return acc


def pow_p(b: int, e: int) -> mpz:
    return gmpy2.powmod(b, e, P)


def inv_p(x: int) -> mpz:
    return gmpy2.invert(x, P)


def inv_q(x: int) -> mpz:
    return gmpy2.invert(x, Q)


def div_q(a: int, b: int) -> mpz:
    return a * gmpy2.invert(b, Q) % Q


def g_pow_p(e: int) -> mpz:
    """g^e mod p through the generator's fixed-base table (compute.fixedbase, built on first use)."""
    return g_pow(e)


def rand_q() -> mpz:
    return mpz(secrets.randbelow(Q))


def rand_range_q(start: int) -> mpz:
    """A uniform random element of [start, q), as the reference draws secret keys."""
    return mpz(start + secrets.randbelow(Q - start))
