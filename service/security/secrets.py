"""The server secret and the token-signing key: two secrets, held by different processes.

The server secret seals the key escrow of running decryption jobs: the API, the bridge and every Ray
node hold it. The JWT secret signs API tokens: only API replicas (and whoever runs ``amarvote token``)
hold it, and it is never derived from the server secret, so a worker node cannot mint tokens.
Neither is ever logged or put in an error message.
"""

from __future__ import annotations

import os
import secrets
import tempfile
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


def _generated(data_dir: Path, name: str, variable: str) -> bytes:
    """A random secret made once into ``data_dir/name`` (0600; the directory 0700 when made here) and read
    back, length-checked, on every later start."""
    path = Path(data_dir) / name
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _publish_once(path, secrets.token_urlsafe(48).encode("utf-8"))
    return _read_generated(path, variable)


def _publish_once(path: Path, value: bytes) -> None:
    """Put ``value`` at ``path`` unless a file is there already, so that no reader ever sees part of it.

    Processes starting together on a fresh data directory all try: each writes its whole value into a
    temporary file of its own (0600, same directory) and publishes it with ``link``, which fails if the
    name exists. One wins; the others read the winner's secret. (Creating the final file and writing it
    afterwards let a racing reader see it empty: a JWT key of b"" or escrow sealed under HKDF(b"").)
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(value)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process published first: its secret is the one
        # The name itself must survive a crash: escrow may be sealed under this secret at once.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        os.unlink(tmp)


def _read_generated(path: Path, variable: str) -> bytes:
    raw = path.read_bytes().strip()
    if len(raw) < MIN_SECRET_BYTES:
        # A file this code wrote is never short: it was truncated or written by hand. Refused rather than
        # used, since a short key signs tokens anyone can forge and seals escrow anyone can open.
        raise ConfigError(
            f"the generated secret file {path} has {len(raw)} bytes, fewer than {MIN_SECRET_BYTES}: remove it"
            " to have a new one generated (what the old one sealed or signed will no longer open or verify),"
            f" or set {variable}"
        )
    return raw


def server_secret(settings: Settings) -> bytes:
    """``AMARVOTE_SERVER_SECRET``, or a random secret generated once into the data directory (0600).

    Production sets it explicitly (every API replica, bridge and Ray node must share it); the embedded
    default keeps its own file so that a restarted process can still open the escrow of a running job.
    """
    if settings.server_secret is not None:
        return _configured(settings.server_secret, "AMARVOTE_SERVER_SECRET")
    return _generated(settings.data_dir, SECRET_FILE, "AMARVOTE_SERVER_SECRET")


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
        return _generated(settings.data_dir, JWT_SECRET_FILE, "AMARVOTE_JWT_SECRET")
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
