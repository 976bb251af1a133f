"""Authenticated encryption under a guardian's passphrase: the sealed file format (credential files,
and the private record a guardian's own ``amarvote guardian`` folder keeps). Pure: no database, no
service; the server-secret sealing of the escrow stays in ``service/security/sealing.py``.

argon2id (argon2-cffi) stretches the passphrase into an AES-256-GCM key. The file is JSON: format, who it
belongs to, KDF parameters, salt, nonce, ciphertext. Everything but the ciphertext is bound as
associated data, so a header edited to point at another guardian fails.

Errors never say more than "wrong passphrase or damaged file": no secret, no partial plaintext.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CREDENTIAL_FORMAT = "amarvote.credential.v1"
# The most a credential file may ask of the KDF: a crafted file must not make the API burn a GiB per
# request. The server's own settings (``kdf_*``) are held to the same bounds, so every file it seals opens.
MAX_KDF_TIME_COST = 6
MAX_KDF_MEMORY_KIB = 256 * 1024
MAX_KDF_PARALLELISM = 4
MIN_PASSPHRASE_CHARS = 8


class SealError(ValueError):
    """The sealed data does not open: wrong passphrase/secret, or the data was altered."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """argon2id cost. The defaults follow RFC 9106's second recommended option (64 MiB, t=3)."""

    time_cost: int = 3
    memory_cost: int = 65536  # KiB
    parallelism: int = 2

    def check(self) -> None:
        """Refuse, before any KDF work, parameters outside the fixed bounds (or that argon2 rejects)."""
        if not (
            1 <= self.time_cost <= MAX_KDF_TIME_COST
            and 1 <= self.parallelism <= MAX_KDF_PARALLELISM
            and 8 * self.parallelism <= self.memory_cost <= MAX_KDF_MEMORY_KIB
        ):
            raise SealError(
                f"credential file has unacceptable KDF parameters (time_cost {self.time_cost}, memory_cost"
                f" {self.memory_cost} KiB, parallelism {self.parallelism}): this server opens at most"
                f" time_cost {MAX_KDF_TIME_COST}, memory_cost {MAX_KDF_MEMORY_KIB} KiB, parallelism"
                f" {MAX_KDF_PARALLELISM}"
            )


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: Any) -> bytes:
    if not isinstance(s, str):
        raise SealError("credential file is malformed")
    try:
        return base64.b64decode(s, validate=True)
    except ValueError as exc:
        raise SealError("credential file is malformed") from exc


def _passphrase_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return hash_secret_raw(
        passphrase.encode("utf-8"),
        salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )


def _header_aad(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def check_passphrase(passphrase: str) -> None:
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise ValueError(f"a passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")


def seal_with_passphrase(
    plaintext: bytes,
    passphrase: str,
    *,
    owner: dict[str, Any],
    params: KdfParams | None = None,
) -> dict[str, Any]:
    """A credential file (JSON-ready dict); ``owner`` (election and guardian ids) stays readable."""
    check_passphrase(passphrase)
    params = params or KdfParams()
    params.check()  # never seal a file this server would refuse to open
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {
        "format": CREDENTIAL_FORMAT,
        "owner": owner,
        "kdf": {"name": "argon2id", "version": 19, "hash_len": 32, **asdict(params)},
        "salt": _b64(salt),
        "cipher": "AES-256-GCM",
        "nonce": _b64(nonce),
    }
    ct = AESGCM(_passphrase_key(passphrase, salt, params)).encrypt(nonce, plaintext, _header_aad(header))
    return {**header, "ciphertext": _b64(ct)}


def credential_owner(sealed: Any) -> dict[str, Any]:
    """The unauthenticated owner fields, to refuse a file for another guardian before any KDF work."""
    if not isinstance(sealed, dict) or sealed.get("format") != CREDENTIAL_FORMAT:
        raise SealError(f"not an amarvote credential file (expected format {CREDENTIAL_FORMAT})")
    owner = sealed.get("owner")
    if not isinstance(owner, dict):
        raise SealError("credential file is malformed")
    return owner


@dataclass(frozen=True, slots=True)
class CredentialFile:
    """A credential file whose header passed every check that costs no KDF work."""

    header: dict[str, Any]
    params: KdfParams
    salt: bytes
    nonce: bytes
    ciphertext: bytes


def _kdf_int(kdf: dict[str, Any], name: str) -> int:
    value = kdf[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise SealError("credential file is malformed")
    return value


def read_credential(sealed: Any) -> CredentialFile:
    """Parse and check a credential file's header: format, KDF (and its bounds), cipher, sizes. Cheap:
    everything a crafted file could use to make us work is refused here, before the KDF."""
    credential_owner(sealed)
    try:
        kdf = sealed["kdf"]
        if kdf.get("name") != "argon2id" or kdf.get("version") != 19 or kdf.get("hash_len") != 32:
            raise SealError("credential file uses an unknown KDF")
        params = KdfParams(
            _kdf_int(kdf, "time_cost"), _kdf_int(kdf, "memory_cost"), _kdf_int(kdf, "parallelism")
        )
        header = {k: sealed[k] for k in ("format", "owner", "kdf", "salt", "cipher", "nonce")}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, SealError):
            raise
        raise SealError("credential file is malformed") from exc
    params.check()
    if header["cipher"] != "AES-256-GCM":
        raise SealError("credential file uses an unknown cipher")
    salt, nonce, ct = _unb64(header["salt"]), _unb64(header["nonce"]), _unb64(sealed.get("ciphertext"))
    if len(nonce) != 12 or len(salt) < 8:
        raise SealError("credential file is malformed")
    return CredentialFile(header, params, salt, nonce, ct)


def open_credential(credential: CredentialFile, passphrase: str) -> bytes:
    """The plaintext of a checked credential file: the KDF runs here, and only here."""
    if not isinstance(passphrase, str):
        raise SealError("wrong passphrase or damaged credential file")
    key = _passphrase_key(passphrase, credential.salt, credential.params)
    try:
        return AESGCM(key).decrypt(credential.nonce, credential.ciphertext, _header_aad(credential.header))
    except InvalidTag as exc:
        raise SealError("wrong passphrase or damaged credential file") from exc


def open_with_passphrase(sealed: Any, passphrase: str) -> bytes:
    return open_credential(read_credential(sealed), passphrase)
