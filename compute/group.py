"""Arithmetic in the ElectionGuard 1.x standard group (constants in compute.constants): hex and byte
forms, operations mod p and mod q, g^e through compute.fixedbase's table, random exponents.

Elements are plain ``gmpy2.mpz`` values: no wrapper classes on the hot path. Hex follows the
reference package (upper case, padded to an even number of digits) because hashes are taken over it.
"""

from __future__ import annotations

import secrets
from binascii import unhexlify
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gmpy2
from gmpy2 import mpz

from compute.constants import ONE, ZERO, P, Q
from compute.fixedbase import g_pow


def to_hex(x: int) -> str:
    """The reference's hex form of an element: upper case, even number of digits."""
    if x < 0:  # not an element; kept as format() writes it rather than refused
        h = format(x, "02X")
        return "0" + h if len(h) % 2 else h
    # the minimal big-endian bytes (one for 0) are exactly the even-length digits, and bytes.hex is
    # about a third faster than format(x, "X") on a 4096-bit mpz (hashes take hundreds a ballot)
    return x.to_bytes((x.bit_length() + 7) // 8 or 1, "big").hex().upper()


def from_hex(s: str) -> mpz:
    """Parse a hex element as the reference writes it (any case, optional leading zero)."""
    try:  # the reference's even count of digits, in about half the time of mpz(s, 16)
        return mpz_from_bytes(unhexlify(s))
    except ValueError:  # an odd count, or what only mpz takes (its results as before)
        return mpz(s, 16) if s else ZERO


class FieldError(ValueError):
    """A field of untrusted JSON that is missing, of the wrong type or out of range; ``path`` names it
    from the document's root (``contests[contest-1].proof.usage``), so a refusal can say which."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@contextmanager
def field_path(prefix: str) -> Iterator[None]:
    """Prefix the path of a FieldError raised inside (a nested object naming its fields)."""
    try:
        yield
    except FieldError as e:
        raise FieldError(f"{prefix}.{e.path}", e.reason) from None


# p and q bound nearly every element parsed: their widths once, not a 4096-bit conversion per element
_P_DIGITS, _Q_DIGITS = 2 * ((P.bit_length() + 7) // 8), 2 * ((Q.bit_length() + 7) // 8)


def _digits(bound: int) -> int:
    if bound is P:
        return _P_DIGITS
    if bound is Q:
        return _Q_DIGITS
    return 2 * ((int(bound).bit_length() + 7) // 8)


def mpz_from_bytes(b: bytes) -> mpz:
    """Big-endian bytes to mpz by gmpy2's own conversion (since 2.2, the pinned minimum): no Python int
    on the way."""
    return mpz.from_bytes(b, "big")


def from_hex_checked(s: object, bound: int, path: str) -> mpz:
    """``from_hex`` for untrusted input: hex digits only (no sign, prefix, space or underscore, which
    ``mpz`` would accept), at most as many as ``bound`` has bytes, and a value in [0, bound)."""
    width = _digits(bound)
    if isinstance(s, str) and 0 < len(s) <= width:
        # unhexlify takes ASCII hex digits two by two and nothing else, a third of the time of a regular
        # expression then mpz(s, 16) (an element of every ballot selection's proof goes through here); an
        # odd count gets the leading zero of the reference's even form
        try:
            x = mpz_from_bytes(unhexlify(s if len(s) % 2 == 0 else "0" + s))
        except ValueError:  # binascii.Error, or not ASCII
            pass
        else:
            if x >= bound:
                raise FieldError(
                    path,
                    "out of range: must be below "
                    + ("p" if bound == P else "q" if bound == Q else str(bound)),
                )
            return x
    raise FieldError(path, f"must be a string of 1 to {width} hex digits")


def hex_field(d: Mapping[str, Any], key: str, bound: int) -> mpz:
    """The element at ``d[key]``, checked by ``from_hex_checked``; missing is a FieldError too."""
    if key not in d:
        raise FieldError(key, "missing")
    return from_hex_checked(d[key], bound, key)


def int_field(d: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    """A JSON integer (not a boolean, string or float) in [lo, hi]."""
    if key not in d:
        raise FieldError(key, "missing")
    x = d[key]
    if isinstance(x, bool) or not isinstance(x, int):
        raise FieldError(key, "must be an integer")
    if not lo <= x <= hi:
        raise FieldError(key, f"out of range: must be in [{lo}, {hi}]")
    return x


def str_field(d: Mapping[str, Any], key: str) -> str:
    if key not in d:
        raise FieldError(key, "missing")
    x = d[key]
    if not isinstance(x, str):
        raise FieldError(key, "must be a string")
    return x


def to_bytes_p(x: int) -> bytes:
    """Fixed-width big-endian bytes of an element of Z_p (512 bytes): the compact storage form."""
    return int(x).to_bytes(512, "big")


def to_bytes_q(x: int) -> bytes:
    """Fixed-width big-endian bytes of an element of Z_q (32 bytes)."""
    return int(x).to_bytes(32, "big")


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
