"""The reference package's hash: SHA-256 over ``|``-separated items, reduced mod q.

Type decides the encoding, exactly as ``electionguard.hash.hash_elems`` does: group elements
(``mpz``) hash as their hex form, Python ``int`` as decimal, ``str`` as itself, ``None`` and
empty sequences as ``null``, objects with ``crypto_hash()`` as the hex of that hash, sequences
recursively. So an element must be passed as ``mpz`` and a counter as ``int``. A ``str`` hashes as
itself, so a caller that hashes one element several times may pass its ``to_hex`` form instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import sha256
from typing import Any

from gmpy2 import mpz

from compute.constants import Q
from compute.group import mpz_from_bytes, to_hex

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
    # Exact types first: about a hundred hashes per ballot, nearly all of mpz, str and int, so the
    # general _encode (isinstance and hasattr chains) only sees the rest; bool and other int
    # subclasses go there too and keep the reference's str(). One join and one digest instead of an
    # update per item: the same bytes ("|" before and after each item, "|" alone for none).
    parts = [""]
    for x in items:
        t = type(x)
        if t is _MPZ:
            parts.append(to_hex(x))
        elif t is str:
            parts.append(x)
        elif t is int:
            parts.append(str(x))
        else:
            parts.append(_encode(x))
    parts.append("")
    return mpz_from_bytes(sha256("|".join(parts).encode("utf-8")).digest()) % Q
