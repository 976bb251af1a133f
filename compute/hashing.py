"""The reference package's hash: SHA-256 over ``|``-separated items, reduced mod q.

Type decides the encoding, exactly as ``electionguard.hash.hash_elems`` does: group elements
(``mpz``) hash as their hex form, Python ``int`` as decimal, ``str`` as itself, ``None`` and
empty sequences as ``null``, objects with ``crypto_hash()`` as the hex of that hash, sequences
recursively. So an element must be passed as ``mpz`` and a counter as ``int``.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import sha256
from typing import Any

from gmpy2 import mpz

from compute.constants import Q
from compute.group import to_hex

_MPZ = type(mpz(0))


def _encode(x: Any) -> str:
    if isinstance(x, _MPZ):
        return to_hex(x)
    if hasattr(x, "crypto_hash"):
        return to_hex(x.crypto_hash())
    if isinstance(x, str):
        return x
    if isinstance(x, int):
        return str(x)
    if not x:
        return "null"
    if isinstance(x, Iterable):
        return to_hex(hash_elems(*x))
    return str(x)


def hash_elems(*items: Any) -> mpz:
    h = sha256(b"|")
    for x in items:
        h.update((_encode(x) + "|").encode("utf-8"))
    return mpz(int.from_bytes(h.digest(), "big")) % Q
