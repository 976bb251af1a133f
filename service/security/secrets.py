"""The server secret and the token-signing key: two secrets, held by different processes.

The server secret seals the key escrow of running decryption jobs: the API, the bridge and every Ray
node hold it. The JWT secret signs API tokens: only API replicas (and whoever runs ``amarvote token``)
hold it, and it is never derived from the server secret, so a worker node cannot mint tokens.
Neither is ever logged or put in an error message.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr

from service.security.sealing import derive_subkey
from service.settings import Settings

SECRET_FILE = "server_secret.key"
JWT_SECRET_FILE = "jwt_secret.key"
MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A secret is missing or too weak; the message names the setting to fix (never its value)."""


def _configured(value: SecretStr, variable: str) -> bytes:
    raw = value.get_secret_value().encode("utf-8")
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{variable} must have at least {MIN_SECRET_BYTES} bytes (it has {len(raw)}): generate one with"
            " `python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    return raw


def _generated(data_dir: Path, name: str) -> bytes:
    """A random secret made once into ``data_dir/name`` (0600) and read back on every later start."""
    path = Path(data_dir) / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
    return path.read_text().strip().encode("utf-8")


def server_secret(settings: Settings) -> bytes:
    """``AMARVOTE_SERVER_SECRET``, or a random secret generated once into the data directory (0600).

    Production sets it explicitly (every API replica, bridge and Ray node must share it); the embedded
    default keeps its own file so that a restarted process can still open the escrow of a running job.
    """
    if settings.server_secret is not None:
        return _configured(settings.server_secret, "AMARVOTE_SERVER_SECRET")
    return _generated(settings.data_dir, SECRET_FILE)


def secret_fingerprint(secret: bytes) -> str:
    """A short public name for a server secret: equal secrets, equal fingerprints; the secret itself
    cannot be recovered from it (an HKDF subkey of its own purpose, truncated)."""
    return derive_subkey(secret, "fingerprint")[:8].hex()


def configured_fingerprint(settings: Settings) -> str | None:
    """The fingerprint of the secret these settings hold, without generating one (None: no secret).

    What a Ray worker reports to the bridge's start-up probe: a node that would have to generate a
    secret of its own could never open the escrow the API sealed.
    """
    if settings.server_secret is None and not (Path(settings.data_dir) / SECRET_FILE).exists():
        return None
    return secret_fingerprint(server_secret(settings))


def jwt_key(settings: Settings) -> bytes:
    """``AMARVOTE_JWT_SECRET``; on the embedded default (no database URL) a random key generated once
    into the data directory, in a file of its own. With a database URL and no JWT secret there is no
    key: the process is a worker or a misconfigured API, and must not sign or accept tokens."""
    if settings.jwt_secret is not None:
        return _configured(settings.jwt_secret, "AMARVOTE_JWT_SECRET")
    if settings.database_url is None:
        return _generated(settings.data_dir, JWT_SECRET_FILE)
    raise ConfigError(
        "AMARVOTE_JWT_SECRET is not set: API replicas (and `amarvote token`) need it to sign and check"
        " tokens; it must differ from AMARVOTE_SERVER_SECRET, which Ray nodes and bridges hold"
    )


def api_keys(settings: Settings) -> tuple[bytes, bytes]:
    """The server secret and the JWT key an API replica starts with, refused if they are one secret."""
    secret, key = server_secret(settings), jwt_key(settings)
    if secrets.compare_digest(secret, key):
        raise ConfigError("AMARVOTE_JWT_SECRET must differ from AMARVOTE_SERVER_SECRET")
    return secret, key
