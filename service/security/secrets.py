"""The server secret and the keys derived from it. Never logged, never in an error message."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from service.security.sealing import derive_subkey
from service.settings import Settings

SECRET_FILE = "server_secret.key"


def server_secret(settings: Settings) -> bytes:
    """``AMARVOTE_SERVER_SECRET``, or a random secret generated once into the data directory (0600).

    Production sets it explicitly (every API replica and bridge must share it); the embedded default
    keeps its own file so that a restarted process can still open the escrow of a running job.
    """
    if settings.server_secret is not None:
        value = settings.server_secret.get_secret_value().encode("utf-8")
        if len(value) < 16:
            raise ValueError("AMARVOTE_SERVER_SECRET must have at least 16 characters")
        return value
    path = Path(settings.data_dir) / SECRET_FILE
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
    """``AMARVOTE_JWT_SECRET`` or a key derived from the server secret."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value().encode("utf-8")
    return derive_subkey(server_secret(settings), "jwt")
