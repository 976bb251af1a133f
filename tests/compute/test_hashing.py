"""The fast encodings under hash_elems, to_hex and hashed ElGamal equal the plain ones they replaced.

Each oracle here is the straightforward form (the reference's per-item ``hash_elems``, ``format``
hex, a per-byte XOR), so a fast path that drifts on an edge case (0, leading zero nibbles or bytes,
a partial block, a bool or another int subclass) fails here before it reaches an interop test.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from enum import IntEnum
from hashlib import sha256
from typing import Any

import pytest
from gmpy2 import mpz

from compute.constants import G, P, Q
from compute.elgamal import Ciphertext
from compute.group import to_hex
from compute.hashed_elgamal import _bytes_to_hex, _keystream_xor
from compute.hashing import hash_elems

_MPZ = type(mpz(0))


def _format_hex(x: int) -> str:
    h = format(x, "02X")
    return "0" + h if len(h) % 2 else h


def _reference_hash(*items: Any) -> mpz:
    """electionguard.hash.hash_elems, one update per item."""
    h = sha256(b"|")
    for x in items:
        if isinstance(x, _MPZ):
            s = _format_hex(x)
        elif hasattr(x, "crypto_hash"):
            s = _format_hex(x.crypto_hash())
        elif isinstance(x, str):
            s = x
        elif isinstance(x, int):
            s = str(x)
        elif not x:
            s = "null"
        elif isinstance(x, Iterable):
            s = _format_hex(_reference_hash(*x))
        else:
            s = str(x)
        h.update((s + "|").encode("utf-8"))
    return mpz(int.from_bytes(h.digest(), "big")) % Q


class _Small(IntEnum):
    TWO = 2


EDGE_VALUES = [0, 1, 15, 16, 255, 256, 0xABC, 0x0ABC, 2**255, Q - 1, Q, P - 1, P, G, 2**4095, 2**4096 - 1]


@pytest.mark.parametrize("x", EDGE_VALUES)
def test_to_hex_matches_format(x: int) -> None:
    assert to_hex(mpz(x)) == _format_hex(x)
    assert to_hex(x) == _format_hex(x)  # a Python int too (counters, keys read from JSON)


def test_to_hex_of_bool_and_negative_as_format_writes_them() -> None:
    assert to_hex(True) == "01"
    assert to_hex(-5) == _format_hex(-5)
    assert to_hex(mpz(-300)) == _format_hex(-300)


def test_hash_elems_matches_reference_on_every_kind_of_item() -> None:
    ct = Ciphertext(mpz(G), mpz(P - 1))
    cases: list[tuple[Any, ...]] = [
        (),
        (mpz(0),),
        (mpz(0x0ABC), 0, 7),
        (mpz(Q - 1), 12345678901234567890),
        ("", "é|ü", mpz(P - 1)),
        (True, False, _Small.TWO),  # int subclasses: str() as the reference, "True" and "_Small.TWO"
        (None, [], (), "null"),
        ([mpz(1), "a", [2, None]], (mpz(P - 1),)),
        (ct, mpz(5)),
        (1.5, b"x"),
    ]
    for items in cases:
        assert hash_elems(*items) == _reference_hash(*items), items


def _per_byte_keystream(session_key: bytes, seed: bytes, data: bytes) -> bytes:
    """The keystream as it was written first: one HMAC per 32-byte block, XORed byte by byte."""
    bits = len(data) * 8
    out = bytearray()
    for i in range(len(data) // 32):
        msg = (i + 1).to_bytes(4, "little") + seed + bits.to_bytes(4, "little")
        key = hmac.digest(session_key, msg, "sha256")
        out += bytes(a ^ b for a, b in zip(data[i * 32 : (i + 1) * 32], key, strict=True))
    return bytes(out)


@pytest.mark.parametrize("length", [0, 31, 32, 33, 64, 512, 545])
def test_keystream_matches_per_byte_xor(length: int) -> None:
    session_key, seed = sha256(b"key").digest(), bytes.fromhex(to_hex(mpz(Q - 1)))
    data = bytes([0, 0, 0]) + bytes(range(256)) * 3  # leading zero bytes survive the integer XOR
    data = data[:length]
    assert _keystream_xor(session_key, seed, data) == _per_byte_keystream(session_key, seed, data)


@pytest.mark.parametrize("raw", [b"", b"\0", b"\0\0\x01", b"\x0a\xbc", b"\xff" * 32, bytes(31) + b"\x10"])
def test_bytes_to_hex_is_to_hex_of_the_integer(raw: bytes) -> None:
    assert _bytes_to_hex(raw) == to_hex(int.from_bytes(raw, "big"))
