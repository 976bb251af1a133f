"""The guardian's own folder: its settings, its public key, its private record sealed under its passphrase
(the credential file format of ``compute/sealing.py``: argon2id, AES-256-GCM) and the progress of its
decryption. The folder is 0700 and every file 0600, written whole (a temporary file, then a rename).

- ``guardian.json``: API URL, election and guardian ids, the guardian's token (a bearer credential: it
  lets its holder act as this guardian in the API, never decrypt), sequence order, quorum.
- ``public-key.json``: the guardian's ``ElectionPublicKey`` (public).
- ``record.sealed.json``: the ``PrivateGuardianRecord`` (secret key, polynomial, the backups it received),
  sealed. The passphrase comes from ``--passphrase-file``, ``AMARVOTE_GUARDIAN_PASSPHRASE`` or a hidden
  prompt, never from the command line, and is written nowhere.
- ``decryption.json``: units uploaded (with a hash of what they decrypted) and the jobs submitted.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from cli.guardian.api import GuardianError
from compute.group import to_hex
from compute.guardian import ElectionPublicKey, PrivateGuardianRecord
from compute.sealing import (
    KdfParams,
    SealError,
    check_passphrase,
    open_credential,
    read_credential,
    seal_with_passphrase,
)

CONFIG, PUBLIC, RECORD, STATE = "guardian.json", "public-key.json", "record.sealed.json", "decryption.json"
RECORD_KIND = "amarvote.guardian_held_record"
PASSPHRASE_ENV = "AMARVOTE_GUARDIAN_PASSPHRASE"


def default_dir(election_id: int, guardian_id: str) -> Path:
    return Path(f"amarvote-guardian-{election_id}-{guardian_id}")


def key_fingerprint(public_key: int) -> str:
    """A short hash of the guardian's election public key, to compare out of band: the first 16 hex
    digits of SHA-256 of the key's hex (as the API shows it: ``key``, ``election_public_key``)."""
    h = hashlib.sha256(to_hex(public_key).encode("ascii")).hexdigest()[:16]
    return "-".join(h[i : i + 4] for i in range(0, 16, 4))


def write_private(path: Path, data: bytes) -> None:
    """``data`` into ``path`` (0600), whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_json(path: Path, doc: Any) -> None:
    write_private(path, json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))


def read_passphrase(passphrase_file: Path | None, *, new: bool) -> str:
    """From ``--passphrase-file`` (its first line), ``AMARVOTE_GUARDIAN_PASSPHRASE``, or a hidden prompt
    (asked twice for a new one)."""
    if passphrase_file is not None:
        try:
            text = passphrase_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise GuardianError(
                f"cannot read the passphrase file {passphrase_file}: {exc.strerror}"
            ) from None
        lines = text.splitlines()
        value = lines[0] if lines else ""
    elif os.environ.get(PASSPHRASE_ENV):
        value = os.environ[PASSPHRASE_ENV]
    else:
        if not sys.stdin.isatty():
            raise GuardianError(
                f"no passphrase: give --passphrase-file, set {PASSPHRASE_ENV}, or run in a terminal"
            )
        value = typer.prompt("Passphrase", hide_input=True, confirmation_prompt=new)
    if new:
        try:
            check_passphrase(value)
        except ValueError as exc:
            raise GuardianError(str(exc)) from None
    return value


@dataclass
class Folder:
    """An initialised guardian folder."""

    path: Path
    config: dict[str, Any]

    @classmethod
    def create(cls, path: Path, config: dict[str, Any]) -> Folder:
        if path.exists() and any(path.iterdir()):
            raise GuardianError(
                f"{path} already exists and is not empty: a guardian folder is made once"
                " (`amarvote guardian ceremony --dir ...` continues with it)"
            )
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
        f = cls(path, config)
        write_json(path / CONFIG, config)
        return f

    @classmethod
    def open(cls, path: Path) -> Folder:
        if not (path / CONFIG).is_file():
            raise GuardianError(
                f"{path} is not a guardian folder (no {CONFIG}): run `amarvote guardian init` first,"
                " or give its --dir"
            )
        return cls(path, json.loads((path / CONFIG).read_text()))

    @property
    def election_id(self) -> int:
        return int(self.config["election_id"])

    @property
    def guardian_id(self) -> str:
        return str(self.config["guardian_id"])

    def _owner(self) -> dict[str, Any]:
        return {"kind": RECORD_KIND, "election_id": self.election_id, "guardian_id": self.guardian_id}

    # -- the sealed private record ------------------------------------------------------------------
    def seal(self, record: PrivateGuardianRecord, passphrase: str, params: KdfParams | None = None) -> None:
        plain = json.dumps(record.to_json(), separators=(",", ":")).encode("utf-8")
        write_json(
            self.path / RECORD, seal_with_passphrase(plain, passphrase, owner=self._owner(), params=params)
        )
        write_json(self.path / PUBLIC, record.election_keys.share().to_json())

    def open_record(self, passphrase: str) -> PrivateGuardianRecord:
        where = self.path / RECORD
        try:
            sealed = json.loads(where.read_text())
            cred = read_credential(sealed)
        except (OSError, ValueError) as exc:
            raise GuardianError(f"cannot read the sealed record {where}: {exc}") from None
        if cred.header["owner"] != self._owner():
            raise GuardianError(
                f"{where} is not guardian {self.guardian_id!r}'s record of election {self.election_id}"
            )
        try:
            plain = open_credential(cred, passphrase)
        except SealError:
            raise GuardianError(
                f"the passphrase does not open {where} (wrong passphrase, or the file was altered)"
            ) from None
        record = PrivateGuardianRecord.from_json(json.loads(plain))
        if record.guardian_id != self.guardian_id:
            raise GuardianError(f"{where} holds guardian {record.guardian_id!r}'s record")
        return record

    def public_key(self) -> ElectionPublicKey:
        return ElectionPublicKey.from_json(json.loads((self.path / PUBLIC).read_text()))

    # -- decryption progress ------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        p = self.path / STATE
        return json.loads(p.read_text()) if p.is_file() else {"uploaded": {}, "jobs": []}

    def save_state(self, state: dict[str, Any]) -> None:
        write_json(self.path / STATE, state)
