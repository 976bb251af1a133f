"""Names in an election record are untrusted data: no record read or write leaves its folder, and the
verifier accounts for every file and every ballot (an entry it cannot place, or two ballots sharing a
tracking code, is a failure naming it, never a skip)."""

from __future__ import annotations

import dataclasses
import json
import random
import zipfile
from pathlib import Path

import pytest
from gmpy2 import mpz

from compute.ballot import BallotBoxState, SubmittedBallot
from compute.decrypt_with_shares import decrypt_with_guardians
from compute.encrypt import encrypt_ballot, submit
from compute.record import (
    DirectorySource,
    ElectionRecord,
    ZipSource,
    write_private_guardians,
    write_record,
)
from compute.verify import verify_source
from tests.cli.run import amarvote
from tests.compute.record_helpers import Keys, ballots, keys, write
from tests.compute.small_election import plaintext_ballot

TRAVERSAL = "x/../../../../PWNED"


@pytest.fixture(scope="module")
def election() -> tuple[Keys, list[SubmittedBallot]]:
    k = keys(candidates=("Ada", "Grace"))
    return k, ballots(k, 6, spoil_every=3)


@pytest.fixture()
def record(election, tmp_path: Path) -> Path:
    k, submitted = election
    return write(k, submitted, tmp_path / "out" / "election_record")


def _spoiled(k: Keys, ballot_id: str) -> tuple[SubmittedBallot, dict]:
    """A real spoiled ballot under ``ballot_id`` and its decryption's JSON with one share tampered."""
    plain = plaintext_ballot(k.internal, ballot_id, random.Random(5))
    b = submit(encrypt_ballot(plain, k.internal, k.context, mpz(1)), BallotBoxState.SPOILED)
    decryption = decrypt_with_guardians(
        b, k.privates[:2], k.records, k.context, manifest=k.internal
    ).to_json()
    contest = next(iter(decryption["contests"].values()))
    selection = next(iter(contest["selections"].values()))
    share = selection["shares"][0]
    share["share"] = format(int(share["share"], 16) ^ 1, "X")
    return b, decryption


def _zip(record: Path, path: Path, extra: dict[str, object]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(record.rglob("*.json")):
            zf.write(f, f"election_record/{f.relative_to(record).as_posix()}")
        for name, doc in extra.items():
            zf.writestr(f"election_record/{name}", json.dumps(doc))
    return path


def _problems(path: Path) -> tuple[list[str], int]:
    source = ZipSource(path) if path.is_file() else DirectorySource(path)
    with source:
        outcome = verify_source(source, batch=2)
    return outcome.problems, outcome.ballots


def _outside(tmp_path: Path, inside: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.is_file() and inside not in p.parents]


def test_record_writes_refuse_names_outside_their_folder(election, tmp_path: Path) -> None:
    k, submitted = election
    evil = dataclasses.replace(submitted[0], object_id=TRAVERSAL)
    out = tmp_path / "a" / "b" / "election_record"
    rec = ElectionRecord(
        manifest=k.manifest, context=k.context, guardians=k.records, submitted_ballots=[evil]
    )
    with pytest.raises(ValueError, match="safe id"):
        write_record(rec, out)
    rec = ElectionRecord(
        manifest=k.manifest, context=k.context, guardians=k.records, devices=[{"device_id": "../../d"}]
    )
    with pytest.raises(ValueError, match="safe id"):
        write_record(rec, out)
    private = dataclasses.replace(k.privates[0], guardian_id="../../../PWNED_guardian")
    with pytest.raises(ValueError, match="safe id"):
        write_private_guardians([private], tmp_path / "a" / "private")
    assert not list(tmp_path.rglob("PWNED*"))


def test_record_reads_refuse_names_outside_the_record(record: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text("{}")
    (record / "submitted_ballots" / "submitted_ballot_link.json").symlink_to(tmp_path / "secret.json")
    zipped = _zip(record, tmp_path / "r.zip", {})
    for source in (DirectorySource(record), ZipSource(zipped)):
        with source:
            for name in (
                "../../secret.json",
                "/etc/passwd",
                "a\\..\\b.json",
                "guardians/../../../secret.json",
            ):
                with pytest.raises(ValueError, match=r"outside|not a plain"):
                    source.read_bytes(name)
    with DirectorySource(record) as source, pytest.raises(ValueError, match="outside"):
        source.read_bytes("submitted_ballots/submitted_ballot_link.json")


def test_record_reads_follow_links_only_while_they_stay_inside(record: Path, tmp_path: Path) -> None:
    """A link among a name's parts is resolved in full: a linked folder leading out is refused, a link
    inside the record is read through, and a root reached through a link reads as itself."""
    ballot = sorted((record / "submitted_ballots").iterdir())[0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.json").write_text("{}")
    (record / "guardians" / "linked").symlink_to(outside, target_is_directory=True)
    (record / "guardians" / "local.json").symlink_to(ballot)
    (tmp_path / "via").symlink_to(record, target_is_directory=True)
    with DirectorySource(record) as source:
        with pytest.raises(ValueError, match="outside"):
            source.read_bytes("guardians/linked/x.json")
        assert not source.exists("guardians/linked/x.json")
        assert source.read_bytes("guardians/local.json") == ballot.read_bytes()
        assert not source.exists("guardians/missing.json")
        with pytest.raises(FileNotFoundError):
            source.read_bytes("guardians/missing/x.json")
    with DirectorySource(tmp_path / "via") as source:
        name = f"submitted_ballots/{ballot.name}"
        assert source.read_bytes(name) == ballot.read_bytes()
        assert source.exists(name)


def test_an_extra_ballot_file_fails_verify_naming_it(record: Path, tmp_path: Path) -> None:
    assert _problems(record)[0] == []
    (record / "submitted_ballots" / "notes.json").write_text("{}")
    (record / "spoiled_ballots" / "spoiled_ballot_.hidden.json").write_text("{}")
    (record / "stray.txt").write_text("x")
    problems, _ = _problems(record)
    for name in ("submitted_ballots/notes.json", "spoiled_ballots/spoiled_ballot_.hidden.json", "stray.txt"):
        assert any(p.startswith(name + ":") for p in problems), (name, problems)
    # The command says so, in process and exit 1.
    r = amarvote("record", "verify", "--local", str(record), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "submitted_ballots/notes.json" in r.stdout


def test_a_tampered_spoiled_ballot_in_a_subfolder_fails_verify(
    election, record: Path, tmp_path: Path
) -> None:
    k, _ = election
    b, decryption = _spoiled(k, "sub/spoiled-1")
    # In a zip (as the API's record once carried such an id): entries under a folder the verifier skipped.
    zipped = _zip(
        record,
        tmp_path / "record.zip",
        {
            "submitted_ballots/submitted_ballot_sub/spoiled-1.json": b.to_json(),
            "spoiled_ballots/spoiled_ballot_sub/spoiled-1.json": decryption,
        },
    )
    problems, checked = _problems(zipped)
    assert any(p.startswith("submitted_ballots/submitted_ballot_sub/spoiled-1.json:") for p in problems), (
        problems
    )
    assert any(p.startswith("spoiled_ballots/spoiled_ballot_sub/spoiled-1.json:") for p in problems), problems
    assert checked == 6  # the count is what was checked, and the record's two other files are named
    r = amarvote("record", "verify", "--local", str(zipped), cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "spoiled_ballots/spoiled_ballot_sub/spoiled-1.json" in r.stdout
    # The same in a directory: a subfolder where only ballot files belong.
    for folder, doc in (("submitted_ballots", b.to_json()), ("spoiled_ballots", decryption)):
        prefix = "submitted_ballot_" if folder == "submitted_ballots" else "spoiled_ballot_"
        (record / folder / f"{prefix}sub").mkdir()
        (record / folder / f"{prefix}sub" / "spoiled-1.json").write_text(json.dumps(doc))
    problems, _ = _problems(record)
    assert any("spoiled_ballots/spoiled_ballot_sub/spoiled-1.json" in p for p in problems), problems


def test_two_ballots_sharing_a_tracking_code_fail_verify_naming_both(election, tmp_path: Path) -> None:
    k, submitted = election
    first, second = submitted[0], submitted[4]  # in different batches of 2
    same = [dataclasses.replace(b, code=first.code) if b is second else b for b in submitted]
    record = write(k, same, tmp_path / "election_record")
    problems, _ = _problems(record)
    # (the copied code no longer chains from the second ballot's own hash: that is named too)
    shared = [p for p in problems if "share the tracking code" in p]
    assert shared and first.object_id in shared[0] and second.object_id in shared[0], problems


def test_record_run_refuses_a_traversal_id_and_writes_nothing_outside(
    election, record: Path, tmp_path: Path
) -> None:
    k, _ = election
    plain = plaintext_ballot(k.internal, TRAVERSAL, random.Random(9))
    evil = submit(encrypt_ballot(plain, k.internal, k.context, mpz(1)), BallotBoxState.CAST)
    (record / "submitted_ballots" / "submitted_ballot_evil.json").write_text(json.dumps(evil.to_json()))
    private = tmp_path / "private"
    write_private_guardians(k.privates, private)
    out = tmp_path / "out2"
    r = amarvote(
        "record",
        "run",
        str(record),
        "--private-guardians",
        str(private),
        "--missing",
        k.records[-1].guardian_id,
        "--out",
        str(out),
        "--chunk-size",
        "2",
        cwd=tmp_path,
        env={"AMARVOTE_DATA_DIR": str(tmp_path / "data")},
    )
    assert r.returncode != 0, r.stdout + r.stderr
    assert "safe id" in r.stdout + r.stderr
    assert not list(tmp_path.rglob("PWNED*"))
    assert not out.exists()
