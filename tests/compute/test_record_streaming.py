"""The streaming verifier (``compute.verify.verify_source``): a record read a batch at a time, from a
directory or a zip, finds what the whole-record verifier finds, across batch boundaries."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from compute.ballot import BallotBoxState
from compute.record import open_record, read_record
from compute.verify import verify_record, verify_source
from tests.compute.record_helpers import Keys, ballots, keys, write


@pytest.fixture(scope="module")
def election() -> tuple[Keys, list]:
    k = keys(candidates=("Ada", "Grace"))
    return k, ballots(k, 12, spoil_every=4)  # 3 spoiled, one in each batch of 4


@pytest.fixture()
def record(election, tmp_path: Path) -> Path:
    k, submitted = election
    return write(k, submitted, tmp_path / "election_record")


def _verify(path: Path, batch: int = 4) -> list[str]:
    with open_record(path) as source:
        return verify_source(source, batch=batch).problems


def test_a_record_verifies_from_its_directory_its_parent_and_a_zip(record: Path, tmp_path: Path) -> None:
    with open_record(record) as source:
        outcome = verify_source(source, batch=4)
    assert outcome.problems == []
    assert (outcome.ballots, outcome.cast, outcome.spoiled, outcome.chunks) == (12, 9, 3, 3)
    assert _verify(record.parent) == []
    zipped = tmp_path / "record.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in sorted(record.rglob("*.json")):
            zf.write(f, f"election_record/{f.relative_to(record)}")
    assert _verify(zipped) == []
    # the same answer as the whole-record verifier, and read_record reads the zip too
    assert verify_record(read_record(zipped)) == []


def test_problems_are_named_whichever_batch_they_are_in(record: Path, election) -> None:
    _, submitted = election
    # a proof altered in the last batch
    victim = submitted[10]
    f = record / "submitted_ballots" / f"submitted_ballot_{victim.object_id}.json"
    doc = json.loads(f.read_text())
    sel = doc["contests"][0]["ballot_selections"][0]
    sel["proof"]["proof_zero_response"] = format(int(sel["proof"]["proof_zero_response"], 16) ^ 1, "X")
    f.write_text(json.dumps(doc))
    with open_record(record) as source:
        outcome = verify_source(source, batch=4)
    assert any(victim.object_id in p and doc["contests"][0]["object_id"] in p for p in outcome.problems)
    assert outcome.chunks_with_problems == ["chunk 3 (ballots ballot-000008 .. ballot-000011, 4 ballots)"]
    assert outcome.failed_ballots == [victim.object_id]


def test_a_clone_in_another_batch_is_named_with_its_original(record: Path, election) -> None:
    _, submitted = election
    original = submitted[1]
    clone = dataclasses.replace(original, object_id="zz-clone")
    (record / "submitted_ballots" / "submitted_ballot_zz-clone.json").write_text(json.dumps(clone.to_json()))
    problems = _verify(record)
    assert "ballot zz-clone repeats a selection ciphertext of ballot ballot-000001" in problems
    # the clone is also counted nowhere in the published tally
    assert any("not the product of the 10 cast ballots" in p for p in problems)


def test_spoiled_decryptions_missing_stray_or_unreadable(record: Path, election) -> None:
    _, submitted = election
    spoiled = [b.object_id for b in submitted if b.state == BallotBoxState.SPOILED]
    d = record / "spoiled_ballots"
    (d / f"spoiled_ballot_{spoiled[0]}.json").unlink()
    shutil.copy(d / f"spoiled_ballot_{spoiled[1]}.json", d / "spoiled_ballot_nobody.json")
    (record / "submitted_ballots" / "submitted_ballot_ballot-000005.json").write_text("{not json")
    problems = _verify(record)
    assert f"spoiled ballot {spoiled[0]}: no decryption in spoiled_ballots/" in problems
    assert "spoiled ballot nobody: decrypted but not a spoiled submitted ballot" in problems
    assert any(
        p.startswith("submitted_ballots/submitted_ballot_ballot-000005.json: not a submitted ballot")
        for p in problems
    )


def test_a_file_named_for_another_ballot_is_named(record: Path) -> None:
    src = record / "submitted_ballots" / "submitted_ballot_ballot-000000.json"
    src.rename(src.with_name("submitted_ballot_renamed.json"))
    problems = _verify(record)
    name = "submitted_ballots/submitted_ballot_renamed.json"
    assert f"{name}: holds ballot ballot-000000, not the one its name gives" in problems
