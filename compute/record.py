"""Reading and writing the reference's election record layout (``electionguard_tools.helpers.export``).

election_record/: manifest.json, context.json, constants.json, coefficients.json, encrypted_tally.json,
tally.json, guardians/guardian_<id>.json, submitted_ballots/submitted_ballot_<id>.json,
spoiled_ballots/spoiled_ballot_<id>.json, encryption_devices/device_<id>.json.
election_private_data/private_guardians/private_guardian_<id>.json.
This is the only module of compute/ that touches files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
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


def read_record(directory: str | Path) -> ElectionRecord:
    """Read an election_record/ directory (ours or the reference's)."""
    d = Path(directory)
    guardians = sorted(
        (GuardianRecord.from_json(x) for x in _read_dir(d / GUARDIANS_DIR, GUARDIAN_PREFIX)),
        key=lambda g: g.sequence_order,
    )
    coefficients = (
        _read(d / "coefficients.json")["coefficients"] if (d / "coefficients.json").exists() else {}
    )
    spoiled = [PlaintextTally.from_json(x) for x in _read_dir(d / SPOILED_BALLOTS_DIR, SPOILED_BALLOT_PREFIX)]
    return ElectionRecord(
        manifest=Manifest.from_json(_read(d / "manifest.json")),
        context=ElectionContext.from_json(_read(d / "context.json")),
        guardians=guardians,
        constants=_read(d / "constants.json") if (d / "constants.json").exists() else standard_constants(),
        lagrange_coefficients={k: from_hex(v) for k, v in coefficients.items()},
        submitted_ballots=[
            SubmittedBallot.from_json(x)
            for x in _read_dir(d / SUBMITTED_BALLOTS_DIR, SUBMITTED_BALLOT_PREFIX)
        ],
        spoiled_ballots={s.object_id: s for s in spoiled},
        encrypted_tally=CiphertextTally.from_json(_read(d / "encrypted_tally.json"))
        if (d / "encrypted_tally.json").exists()
        else None,
        tally=PlaintextTally.from_json(_read(d / "tally.json")) if (d / "tally.json").exists() else None,
        devices=_read_dir(d / DEVICES_DIR, DEVICE_PREFIX),
    )


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
