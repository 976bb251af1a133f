"""Reading and writing the reference's election record layout (``electionguard_tools.helpers.export``).

election_record/: manifest.json, context.json, constants.json, coefficients.json, encrypted_tally.json,
tally.json, guardians/guardian_<id>.json, submitted_ballots/submitted_ballot_<id>.json,
spoiled_ballots/spoiled_ballot_<id>.json, encryption_devices/device_<id>.json.
election_private_data/private_guardians/private_guardian_<id>.json.
This is the only module of compute/ that touches files.

A record is read through a ``RecordSource`` (a directory, or a zip of one, as the API serves it): the small
files whole (``read_header``), the ballots by member name, a batch at a time, so a verifier holds one
batch of ballots, never the election. ``read_record`` loads everything, for small records and tests.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gmpy2 import mpz

from compute.ballot import SubmittedBallot
from compute.constants import G, P, Q, R
from compute.context import ElectionContext
from compute.group import from_hex, to_hex
from compute.guardian import GuardianRecord, PrivateGuardianRecord
from compute.manifest import Manifest
from compute.plaintext_tally import PlaintextTally
from compute.tally import CiphertextTally

ELECTION_RECORD_DIR = "election_record"
PRIVATE_DATA_DIR = "election_private_data"
PRIVATE_GUARDIANS_DIR = "private_guardians"
DEVICES_DIR = "encryption_devices"
GUARDIANS_DIR = "guardians"
SUBMITTED_BALLOTS_DIR = "submitted_ballots"
SPOILED_BALLOTS_DIR = "spoiled_ballots"
GUARDIAN_PREFIX = "guardian_"
SUBMITTED_BALLOT_PREFIX = "submitted_ballot_"
SPOILED_BALLOT_PREFIX = "spoiled_ballot_"
DEVICE_PREFIX = "device_"
PRIVATE_GUARDIAN_PREFIX = "private_guardian_"


def standard_constants() -> dict[str, str]:
    return {"large_prime": to_hex(P), "small_prime": to_hex(Q), "cofactor": to_hex(R), "generator": to_hex(G)}


@dataclass(slots=True)
class ElectionRecord:
    """Everything a verifier reads; ``spoiled_ballots`` are keyed by ballot id."""

    manifest: Manifest
    context: ElectionContext
    guardians: list[GuardianRecord]
    constants: dict[str, str] = field(default_factory=standard_constants)
    lagrange_coefficients: dict[str, mpz] = field(default_factory=dict)
    submitted_ballots: list[SubmittedBallot] = field(default_factory=list)
    spoiled_ballots: dict[str, PlaintextTally] = field(default_factory=dict)
    encrypted_tally: CiphertextTally | None = None
    tally: PlaintextTally | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f)


def _read(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _read_dir(directory: Path, prefix: str) -> list[Any]:
    if not directory.is_dir():
        return []
    return [_read(p) for p in sorted(directory.glob(f"{prefix}*.json"))]


def write_record(record: ElectionRecord, directory: str | Path) -> Path:
    d = Path(directory)
    _write(d / "manifest.json", record.manifest.to_json())
    _write(d / "context.json", record.context.to_json())
    _write(d / "constants.json", record.constants)
    _write(
        d / "coefficients.json",
        {"coefficients": {k: to_hex(v) for k, v in record.lagrange_coefficients.items()}},
    )
    for device in record.devices:
        _write(d / DEVICES_DIR / f"{DEVICE_PREFIX}{device['device_id']}.json", device)
    for g in record.guardians:
        _write(d / GUARDIANS_DIR / f"{GUARDIAN_PREFIX}{g.guardian_id}.json", g.to_json())
    for b in record.submitted_ballots:
        _write(d / SUBMITTED_BALLOTS_DIR / f"{SUBMITTED_BALLOT_PREFIX}{b.object_id}.json", b.to_json())
    for ballot_id, s in record.spoiled_ballots.items():
        _write(d / SPOILED_BALLOTS_DIR / f"{SPOILED_BALLOT_PREFIX}{ballot_id}.json", s.to_json())
    if record.encrypted_tally is not None:
        _write(d / "encrypted_tally.json", record.encrypted_tally.to_json())
    if record.tally is not None:
        _write(d / "tally.json", record.tally.to_json())
    return d


class RecordSource:
    """The files of one election_record/, named by their path inside it (``submitted_ballots/x.json``)."""

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def read_bytes(self, name: str) -> bytes:
        raise NotImplementedError

    def ids(self, folder: str, prefix: str) -> list[str]:
        """The ``<id>`` of every ``folder/prefix<id>.json`` member, sorted (the order a verifier meets
        them in): one short string per file is all that is kept."""
        raise NotImplementedError

    def names(self, folder: str, prefix: str) -> list[str]:
        return [member(folder, prefix, i) for i in self.ids(folder, prefix)]

    def close(self) -> None:
        pass

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name))

    def batches(self, names: Sequence[str], size: int) -> Iterator[list[tuple[str, bytes]]]:
        """(name, bytes) of ``names``, ``size`` at a time."""
        for i in range(0, len(names), size):
            yield [(n, self.read_bytes(n)) for n in names[i : i + size]]

    def __enter__(self) -> RecordSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DirectorySource(RecordSource):
    def __init__(self, directory: str | Path) -> None:
        self.root = Path(directory)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def read_bytes(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def ids(self, folder: str, prefix: str) -> list[str]:
        d = self.root / folder
        if not d.is_dir():
            return []
        with os.scandir(d) as it:
            found = [
                e.name[len(prefix) : -5] for e in it if e.name.startswith(prefix) and e.name.endswith(".json")
            ]
        found.sort()
        return found


class ZipSource(RecordSource):
    """A zip holding ``election_record/...`` (as ``GET /api/elections/{id}/record`` serves it) or the
    record's files at its top level."""

    def __init__(self, path: str | Path) -> None:
        self.zf = zipfile.ZipFile(path)
        members = set(self.zf.namelist())
        self.root = f"{ELECTION_RECORD_DIR}/" if f"{ELECTION_RECORD_DIR}/manifest.json" in members else ""

    def exists(self, name: str) -> bool:
        try:
            self.zf.getinfo(self.root + name)
        except KeyError:
            return False
        return True

    def read_bytes(self, name: str) -> bytes:
        return self.zf.read(self.root + name)

    def ids(self, folder: str, prefix: str) -> list[str]:
        start = f"{self.root}{folder}/{prefix}"
        found = {
            n[len(start) : -5]
            for n in self.zf.namelist()
            if n.startswith(start) and n.endswith(".json") and "/" not in n[len(start) :]
        }
        return sorted(found)

    def close(self) -> None:
        self.zf.close()


def open_record(path: str | Path) -> RecordSource:
    """A directory (election_record/ itself, or the folder holding it) or a zip file of one."""
    p = Path(path)
    if p.is_file():
        return ZipSource(p)
    nested = p / ELECTION_RECORD_DIR
    return DirectorySource(nested if nested.is_dir() else p)


def member(folder: str, prefix: str, object_id: str) -> str:
    """The name of an object's file in the record (``submitted_ballots/submitted_ballot_<id>.json``)."""
    return f"{folder}/{prefix}{object_id}.json"


def ballot_id_of(name: str, prefix: str) -> str:
    """The ballot id a member's name gives (``submitted_ballots/submitted_ballot_<id>.json``)."""
    return PurePosixPath(name).stem.removeprefix(prefix)


def header_files(source: RecordSource) -> dict[str, Any]:
    """The JSON of every file but the ballots and the spoiled ballots' decryptions: small, public, and
    what a verifier keeps whole (and hands to each Ray task)."""

    def optional(name: str) -> Any:
        return source.read_json(name) if source.exists(name) else None

    return {
        "manifest": source.read_json("manifest.json"),
        "context": source.read_json("context.json"),
        "constants": optional("constants.json"),
        "coefficients": optional("coefficients.json"),
        "encrypted_tally": optional("encrypted_tally.json"),
        "tally": optional("tally.json"),
        "guardians": [source.read_json(n) for n in source.names(GUARDIANS_DIR, GUARDIAN_PREFIX)],
        "devices": [source.read_json(n) for n in source.names(DEVICES_DIR, DEVICE_PREFIX)],
    }


def header_from_files(files: dict[str, Any]) -> ElectionRecord:
    """``header_files`` parsed: a record without ballots."""
    coefficients = (files["coefficients"] or {}).get("coefficients", {})
    encrypted, tally = files["encrypted_tally"], files["tally"]
    return ElectionRecord(
        manifest=Manifest.from_json(files["manifest"]),
        context=ElectionContext.from_json(files["context"]),
        guardians=sorted(
            (GuardianRecord.from_json(g) for g in files["guardians"]), key=lambda g: g.sequence_order
        ),
        constants=files["constants"] or standard_constants(),
        lagrange_coefficients={k: from_hex(v) for k, v in coefficients.items()},
        encrypted_tally=CiphertextTally.from_json(encrypted) if encrypted is not None else None,
        tally=PlaintextTally.from_json(tally) if tally is not None else None,
        devices=files["devices"],
    )


def read_header(source: RecordSource) -> ElectionRecord:
    """Everything but the ballots and the spoiled ballots' decryptions."""
    return header_from_files(header_files(source))


def read_record(directory: str | Path) -> ElectionRecord:
    """Read a whole record (ours or the reference's) into memory: for small records and tests; a
    verifier streams it instead (``open_record``, ``compute.verify.verify_source``)."""
    with open_record(directory) as source:
        record = read_header(source)
        for batch in source.batches(source.names(SUBMITTED_BALLOTS_DIR, SUBMITTED_BALLOT_PREFIX), 500):
            record.submitted_ballots += [SubmittedBallot.from_json(json.loads(b)) for _, b in batch]
        for batch in source.batches(source.names(SPOILED_BALLOTS_DIR, SPOILED_BALLOT_PREFIX), 500):
            for _, b in batch:
                s = PlaintextTally.from_json(json.loads(b))
                record.spoiled_ballots[s.object_id] = s
    return record


def write_private_guardians(records: list[PrivateGuardianRecord], private_directory: str | Path) -> Path:
    d = Path(private_directory) / PRIVATE_GUARDIANS_DIR
    for r in records:
        _write(d / f"{PRIVATE_GUARDIAN_PREFIX}{r.guardian_id}.json", r.to_json())
    return d


def read_private_guardians(private_directory: str | Path) -> list[PrivateGuardianRecord]:
    """The private guardian records of an election_private_data/ directory, by sequence order."""
    d = Path(private_directory) / PRIVATE_GUARDIANS_DIR
    records = [PrivateGuardianRecord.from_json(x) for x in _read_dir(d, PRIVATE_GUARDIAN_PREFIX)]
    return sorted(records, key=lambda r: r.sequence_order)
