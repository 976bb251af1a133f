"""Authenticated encryption at rest: with a guardian's passphrase (credential files) and with the
server secret (the key escrow of running decryption jobs). The one place the service seals secrets.

- Passphrase: the format lives in ``compute/sealing.py`` (pure, so a guardian's own machine opens and
  seals its record without the service's code); its names are re-exported here for the service.
- Server secret: HKDF-SHA256 derives a key per purpose; the blob is version byte, nonce, ciphertext,
  and the caller's ``context`` (say ``escrow:<election>:<guardian>``) is the associated data, so a
  sealed row copied under another guardian's id does not open.

Errors never say more than "wrong passphrase or damaged file": no secret, no partial plaintext.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from compute.sealing import (
    CREDENTIAL_FORMAT,
    MAX_KDF_MEMORY_KIB,
    MAX_KDF_PARALLELISM,
    MAX_KDF_TIME_COST,
    MIN_PASSPHRASE_CHARS,
    CredentialFile,
    KdfParams,
    SealError,
    check_passphrase,
    credential_owner,
    open_credential,
    open_with_passphrase,
    read_credential,
    seal_with_passphrase,
)

__all__ = [
    "CREDENTIAL_FORMAT",
    "MAX_KDF_MEMORY_KIB",
    "MAX_KDF_PARALLELISM",
    "MAX_KDF_TIME_COST",
    "MIN_PASSPHRASE_CHARS",
    "CredentialFile",
    "KdfParams",
    "SealError",
    "check_passphrase",
    "credential_owner",
    "derive_subkey",
    "open_credential",
    "open_with_passphrase",
    "open_with_secret",
    "read_credential",
    "seal_with_passphrase",
    "seal_with_secret",
]

_SECRET_BLOB_VERSION = b"\x01"


def _secret_key(secret: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"amarvote/{purpose}".encode()).derive(
        secret
    )


def seal_with_secret(plaintext: bytes, secret: bytes, *, purpose: str, context: str) -> bytes:
    """Seal under the server secret: ``purpose`` picks the derived key, ``context`` is bound as AAD."""
    nonce = os.urandom(12)
    ct = AESGCM(_secret_key(secret, purpose)).encrypt(nonce, plaintext, context.encode("utf-8"))
    return _SECRET_BLOB_VERSION + nonce + ct


def open_with_secret(blob: bytes, secret: bytes, *, purpose: str, context: str) -> bytes:
    if len(blob) < 1 + 12 + 16 or blob[:1] != _SECRET_BLOB_VERSION:
        raise SealError("sealed data is malformed")
    try:
        return AESGCM(_secret_key(secret, purpose)).decrypt(blob[1:13], blob[13:], context.encode("utf-8"))
    except InvalidTag as exc:
        raise SealError("sealed data does not open under this server secret") from exc


def derive_subkey(secret: bytes, purpose: str) -> bytes:
    """An independent 32-byte key for another use of the server secret (never for signing tokens:
    every Ray node holds the server secret)."""
    return _secret_key(secret, purpose)
