"""Hashed ElGamal, as ``electionguard.elgamal.hashed_elgamal_encrypt``: partial key backups and contest data.

A session key H(g^r, K^r) keys HMAC-SHA256 blocks that are XORed over the message in 32-byte blocks,
then a MAC over pad || data. The reference writes ``data`` and ``mac`` as hex of the integer they
encode (leading zero bytes dropped) and pads ``data`` back to 512 bytes when decrypting, so only
512-byte messages (the padded ``CoordinateData``) round-trip: that is all it is used for.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.constants import P
from compute.group import from_hex, g_pow_p, hex_field, pow_p, rand_q, str_field, to_hex
from compute.hashing import hash_elems

_BLOCK = 32
_PADDED_SIZE = 512


def _hex_bytes(x: int) -> bytes:
    """The reference's ``to_hex_bytes``: the bytes of its (even-length) hex form."""
    return bytes.fromhex(to_hex(x))


def _bytes_to_hex(b: bytes) -> str:
    # to_hex of the integer the bytes encode: its minimal bytes are these without leading zeros
    return b.lstrip(b"\0").hex().upper() or "00"


def _padded(hex_data: str) -> bytes:
    raw = bytes.fromhex(hex_data)
    return raw if len(raw) >= _PADDED_SIZE else bytes(_PADDED_SIZE - len(raw)) + raw


def _hmac(key: bytes, message: bytes, length: int | None = None, start: int = 0) -> bytes:
    if length:
        message = start.to_bytes(4, "little") + message + length.to_bytes(4, "little")
    return hmac.digest(key, message, "sha256")


def _keystream_xor(session_key: bytes, seed: bytes, data: bytes) -> bytes:
    # block i's key is HMAC(session_key, i || seed || bit length), i from 1; a trailing partial block
    # is dropped, as the reference does
    n = len(data) - len(data) % _BLOCK
    bit_length = (len(data) * 8).to_bytes(4, "little")
    keyed = hmac.new(session_key, digestmod="sha256")  # keyed once, copied per block
    stream = bytearray()
    for i in range(1, n // _BLOCK + 1):
        h = keyed.copy()
        h.update(i.to_bytes(4, "little") + seed + bit_length)
        stream += h.digest()
    # one XOR of two n-byte integers instead of a generator over every byte
    return (int.from_bytes(data[:n], "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


@dataclass(slots=True)
class HashedElGamalCiphertext:
    pad: mpz
    data: str  # hex
    mac: str  # hex

    def to_json(self) -> dict[str, Any]:
        return {"pad": to_hex(self.pad), "data": self.data, "mac": self.mac}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HashedElGamalCiphertext:
        """Untrusted JSON: the pad in range, data and mac strings (FieldError naming the field)."""
        return cls(hex_field(d, "pad", P), str_field(d, "data"), str_field(d, "mac"))

    def decrypt(self, secret_key: mpz, encryption_seed: mpz) -> bytes | None:
        """The plaintext, or None when the MAC does not match (wrong key, seed or tampering)."""
        session_key = _hex_bytes(hash_elems(self.pad, pow_p(self.pad, secret_key)))
        seed = _hex_bytes(encryption_seed)
        data = _padded(self.data)
        if len(data) % _BLOCK:
            return None
        mac_key = _hmac(session_key, seed, len(data) * 8)
        if _bytes_to_hex(_hmac(mac_key, _hex_bytes(self.pad) + data)) != self.mac:
            return None
        return _keystream_xor(session_key, seed, data)


def hashed_elgamal_encrypt(
    message: bytes,
    nonce: mpz,
    public_key: mpz,
    encryption_seed: mpz,
    *,
    key_power: mpz | None = None,
    pad: mpz | None = None,
) -> HashedElGamalCiphertext:
    """``key_power`` is K^nonce and ``pad`` g^nonce when the caller has a faster way to them (the
    encryption's fixed-base tables for K and g)."""
    if pad is None:
        pad = g_pow_p(nonce)
    shared = pow_p(public_key, nonce) if key_power is None else key_power
    pad_hex = to_hex(pad)  # hashed and MACed: converted once (a str hashes as itself)
    session_key = _hex_bytes(hash_elems(pad_hex, shared))
    seed = _hex_bytes(encryption_seed)
    if len(message) % _BLOCK:
        message += bytes(_BLOCK - len(message) % _BLOCK)
    data = _keystream_xor(session_key, seed, message)
    mac_key = _hmac(session_key, seed, len(message) * 8)
    mac = _hmac(mac_key, bytes.fromhex(pad_hex) + data)
    return HashedElGamalCiphertext(pad, _bytes_to_hex(data), _bytes_to_hex(mac))


# The backup's plaintext: the reference's ``CoordinateData`` JSON, padded to 512 bytes
# (2-byte big-endian padding length, the JSON, zero bytes).


def encode_coordinate(coordinate: mpz) -> bytes:
    raw = json.dumps({"coordinate": to_hex(coordinate)}).encode("utf-8")
    pad_len = _PADDED_SIZE - 2 - len(raw)
    return pad_len.to_bytes(2, "big") + raw + bytes(pad_len)


def decode_coordinate(padded: bytes) -> mpz:
    pad_len = int.from_bytes(padded[:2], "big")
    return from_hex(json.loads(padded[2 : _PADDED_SIZE - pad_len])["coordinate"])


def encrypt_coordinate(
    coordinate: mpz, public_key: mpz, encryption_seed: mpz, nonce: mpz | None = None
) -> HashedElGamalCiphertext:
    return hashed_elgamal_encrypt(
        encode_coordinate(coordinate), rand_q() if nonce is None else nonce, public_key, encryption_seed
    )


def backup_seed(receiver_guardian_id: str, sequence_order: int) -> mpz:
    """The reference's ``get_backup_seed``: H(receiver id, receiver sequence order)."""
    return hash_elems(receiver_guardian_id, int(sequence_order))
