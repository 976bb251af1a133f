"""Reading and writing the reference's election record layout (``electionguard_tools.helpers.export``).

election_record/: manifest.json, context.json, constants.json, coefficients.json, encrypted_tally.json,
tally.json, guardians/guardian_<id>.json, submitted_ballots/submitted_ballot_<id>.json,
spoiled_ballots/spoiled_ballot_<id>.json, encryption_devices/device_<id>.json.
election_private_data/private_guardians/private_guardian_<id>.json.
This is the only module of compute/ that touches files.

Names are untrusted: every id joined into a name passes ``compute.ids.check_id`` on the way out, every
path written or read is resolved and must stay inside its folder (``inside``), and every member name a
source is asked for is a plain relative name (``check_member``). ``layout_problems`` names every entry of a
record that is not one of its known files, so a verifier can account for each file instead of skipping it.

A record is read through a ``RecordSource`` (a directory, or a zip of one, as the API serves it): the small
files whole (``read_header``), the ballots by member name, a batch at a time, so a verifier holds one
batch of ballots, never the election. ``read_record`` loads everything, for small records and tests.
"""

from __future__ import annotations

import json
import os
import stat
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
from compute.ids import BALLOT_ID_MAX, DEVICE_ID_MAX, GUARDIAN_ID_MAX, check_id, is_safe_id
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
TOP_FILES = frozenset(
    {
        "manifest.json",
        "context.json",
        "constants.json",
        "coefficients.json",
        "encrypted_tally.json",
        "tally.json",
    }
)
# folder -> (file name prefix, the id's bound): the only files a record holds besides TOP_FILES
FOLDERS = {
    GUARDIANS_DIR: (GUARDIAN_PREFIX, GUARDIAN_ID_MAX),
    SUBMITTED_BALLOTS_DIR: (SUBMITTED_BALLOT_PREFIX, BALLOT_ID_MAX),
    SPOILED_BALLOTS_DIR: (SPOILED_BALLOT_PREFIX, BALLOT_ID_MAX),
    DEVICES_DIR: (DEVICE_PREFIX, DEVICE_ID_MAX),
}
LAYOUT_LISTED = 100  # entries named one by one; beyond, a count


class UnsafeName(ValueError):
    """A member name or path that would leave its record or folder."""


def check_member(name: str) -> str:
    """``name`` when it is a plain relative POSIX name (no absolute path, no ``.`` or ``..`` part, no
    empty part, no backslash or control character); ``UnsafeName`` otherwise."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise UnsafeName(f"{name!r} is not a plain relative name: it would be read outside the record")
    return name


def inside(root: str | Path, name: str) -> Path:
    """``root/name``, resolved (symbolic links followed), refused unless it stays under ``root``."""
    base = Path(root).resolve()
    path = (base / check_member(name)).resolve()
    if not path.is_relative_to(base):
        raise UnsafeName(f"{name!r} resolves outside {root}")
    return path


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


def _write(root: Path, name: str, data: Any) -> None:
    path = inside(root, name)
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


def _named(folder: str, prefix: str, object_id: object, field: str, max_length: int) -> str:
    return member(folder, prefix, check_id(object_id, field, max_length))


def write_record(record: ElectionRecord, directory: str | Path) -> Path:
    """The record's files under ``directory``; an id that fails the rule is refused (``UnsafeId``) before
    anything is written, and no path leaves ``directory``."""
    d = Path(directory)
    files: list[tuple[str, Any]] = [
        ("manifest.json", record.manifest.to_json()),
        ("context.json", record.context.to_json()),
        ("constants.json", record.constants),
        (
            "coefficients.json",
            {"coefficients": {k: to_hex(v) for k, v in record.lagrange_coefficients.items()}},
        ),
    ]
    for device in record.devices:
        name = _named(DEVICES_DIR, DEVICE_PREFIX, str(device.get("device_id")), "device_id", DEVICE_ID_MAX)
        files.append((name, device))
    for g in record.guardians:
        name = _named(GUARDIANS_DIR, GUARDIAN_PREFIX, g.guardian_id, "guardian_id", GUARDIAN_ID_MAX)
        files.append((name, g.to_json()))
    names = [
        _named(SUBMITTED_BALLOTS_DIR, SUBMITTED_BALLOT_PREFIX, b.object_id, "ballot object_id", BALLOT_ID_MAX)
        for b in record.submitted_ballots
    ]
    spoiled = [
        _named(SPOILED_BALLOTS_DIR, SPOILED_BALLOT_PREFIX, i, "spoiled ballot id", BALLOT_ID_MAX)
        for i in record.spoiled_ballots
    ]
    for name, data in files:
        _write(d, name, data)
    for name, b in zip(names, record.submitted_ballots, strict=True):
        _write(d, name, b.to_json())
    for name, s in zip(spoiled, record.spoiled_ballots.values(), strict=True):
        _write(d, name, s.to_json())
    if record.encrypted_tally is not None:
        _write(d, "encrypted_tally.json", record.encrypted_tally.to_json())
    if record.tally is not None:
        _write(d, "tally.json", record.tally.to_json())
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

    def entries(self) -> Iterator[tuple[str, str | None]]:
        """Every entry of the record, one at a time: (its name, None) when it is a file inside the record,
        (its name, why not) otherwise (``layout_problems`` places the rest)."""
        raise NotImplementedError

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


def _id_in(name: str, prefix: str, max_length: int) -> str | None:
    """The id of a ``prefix<id>.json`` file name, when it is one and its id is safe."""
    if not (name.startswith(prefix) and name.endswith(".json")):
        return None
    found = name[len(prefix) : -5]
    return found if is_safe_id(found, max_length) else None


def _bound(folder: str) -> int:
    return FOLDERS[folder][1] if folder in FOLDERS else BALLOT_ID_MAX


class DirectorySource(RecordSource):
    def __init__(self, directory: str | Path) -> None:
        self.root = Path(directory)
        self._base: str | None = None  # the root resolved, on first use

    def _inside(self, name: str) -> Path:
        """``inside(self.root, name)``, with the root resolved once. Below a resolved root, a name of plain
        parts (``check_member``: no ``..``) is already its own resolution unless one of its parts is a
        symbolic link, which only ``inside`` then resolves: two ``lstat`` calls for a ballot's file
        instead of one per part of the whole path, which cost as much as reading the file."""
        if self._base is None:
            self._base = str(self.root.resolve())
        path = self._base
        for part in check_member(name).split("/"):
            path = os.path.join(path, part)
            try:
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    return inside(self.root, name)
            except OSError:  # missing (or not a folder): nothing below it to follow, as for ``inside``
                break
        return Path(self._base, name)

    def exists(self, name: str) -> bool:
        try:
            return self._inside(name).is_file()
        except UnsafeName:
            return False

    def read_bytes(self, name: str) -> bytes:
        return self._inside(name).read_bytes()

    def ids(self, folder: str, prefix: str) -> list[str]:
        d = self.root / folder
        if not d.is_dir():
            return []
        found = []
        with os.scandir(d) as it:
            for e in it:
                i = _id_in(e.name, prefix, _bound(folder))
                if i is not None and e.is_file(follow_symlinks=False):
                    found.append(i)
        found.sort()
        return found

    def entries(self) -> Iterator[tuple[str, str | None]]:
        root = self.root
        for top, dirs, files in os.walk(root):
            rel = Path(top).relative_to(root).as_posix()
            prefix = "" if rel == "." else rel + "/"
            for name in dirs:
                if os.path.islink(os.path.join(top, name)):
                    yield prefix + name + "/", "a symbolic link to a folder"
            for name in files:
                path = os.path.join(top, name)
                yield prefix + name, ("a symbolic link" if os.path.islink(path) else None)


class ZipSource(RecordSource):
    """A zip holding ``election_record/...`` (as ``GET /api/elections/{id}/record`` serves it) or the
    record's files at its top level."""

    def __init__(self, path: str | Path) -> None:
        self.zf = zipfile.ZipFile(path)
        members = set(self.zf.namelist())
        self.root = f"{ELECTION_RECORD_DIR}/" if f"{ELECTION_RECORD_DIR}/manifest.json" in members else ""

    def exists(self, name: str) -> bool:
        try:
            self.zf.getinfo(self.root + check_member(name))
        except (KeyError, UnsafeName):
            return False
        return True

    def read_bytes(self, name: str) -> bytes:
        return self.zf.read(self.root + check_member(name))

    def ids(self, folder: str, prefix: str) -> list[str]:
        start = f"{self.root}{folder}/"
        found = set()
        for n in self.zf.namelist():
            if n.startswith(start) and "/" not in n[len(start) :]:
                i = _id_in(n[len(start) :], prefix, _bound(folder))
                if i is not None:
                    found.add(i)
        return sorted(found)

    def entries(self) -> Iterator[tuple[str, str | None]]:
        seen: set[str] = set()
        for info in self.zf.infolist():
            n = info.filename
            if n in seen:
                yield n, "appears more than once in the zip (which copy is the record's?)"
                continue
            seen.add(n)
            if not n.startswith(self.root):
                yield n, f"outside {ELECTION_RECORD_DIR}/"
            elif not info.is_dir():
                try:
                    yield check_member(n[len(self.root) :]), None
                except UnsafeName as exc:
                    yield n, str(exc)

    def close(self) -> None:
        self.zf.close()


def place_problem(name: str) -> str | None:
    """Why a file named ``name`` (inside the record) is none of the record's files, or None."""
    parts = name.split("/")
    if len(parts) == 1:
        return None if name in TOP_FILES else "not a file of the record's layout"
    if parts[0] not in FOLDERS:
        return "not in a folder of the record's layout"
    prefix, bound = FOLDERS[parts[0]]
    if len(parts) > 2:
        return f"a subfolder of {parts[0]}/, where only {prefix}<id>.json files belong"
    if not (parts[1].startswith(prefix) and parts[1].endswith(".json")):
        return f"not a {prefix}<id>.json file"
    try:
        check_id(parts[1][len(prefix) : -5], "the id in its name", bound)
    except ValueError as exc:
        return str(exc)
    return None


def layout_problems(source: RecordSource) -> list[str]:
    """A problem naming each entry of the record that is not one of its files (an unknown file, a
    subfolder, an id that fails the rule, a name outside the record): nothing is skipped unnamed. The
    entries are walked once; at most ``LAYOUT_LISTED`` are named, the rest counted."""
    problems: list[str] = []
    more = 0
    for name, why in source.entries():
        reason = why if why is not None else place_problem(name)
        if reason is None:
            continue
        if len(problems) < LAYOUT_LISTED:
            problems.append(f"{name}: {reason}; not checked")
        else:
            more += 1
    if more:
        problems.append(f"and {more} more entries that are not files of the record")
    return problems


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
    names = [
        f"{PRIVATE_GUARDIAN_PREFIX}{check_id(r.guardian_id, 'guardian_id', GUARDIAN_ID_MAX)}.json"
        for r in records
    ]
    for name, r in zip(names, records, strict=True):
        _write(d, name, r.to_json())
    return d


def read_private_guardians(private_directory: str | Path) -> list[PrivateGuardianRecord]:
    """The private guardian records of an election_private_data/ directory, by sequence order."""
    d = Path(private_directory) / PRIVATE_GUARDIANS_DIR
    records = [PrivateGuardianRecord.from_json(x) for x in _read_dir(d, PRIVATE_GUARDIAN_PREFIX)]
    return sorted(records, key=lambda r: r.sequence_order)
