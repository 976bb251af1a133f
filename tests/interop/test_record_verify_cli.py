"""``amarvote record verify`` on the reference's record: accepted whole, a tampered ballot named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.run import amarvote


def test_record_verify_accepts_the_reference_record_and_names_a_tampered_ballot(
    reference_election, tmp_path: Path
) -> None:
    ok = amarvote("record", "verify", str(reference_election.record_dir), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    bad = tmp_path / "bad"
    shutil.copytree(reference_election.record_dir, bad)
    ballot_file = sorted((bad / "submitted_ballots").glob("*.json"))[0]
    ballot = json.loads(ballot_file.read_text())
    sel = ballot["contests"][0]["ballot_selections"][0]
    sel["proof"]["proof_zero_response"] = format(int(sel["proof"]["proof_zero_response"], 16) ^ 1, "X")
    ballot_file.write_text(json.dumps(ballot))
    # The tampered copy in this process (`--local`: the same units and closing as on Ray, checked above).
    r = amarvote("record", "verify", "--local", str(bad), cwd=tmp_path)
    assert r.returncode == 1
    assert ballot["object_id"] in r.stdout
    assert ballot["contests"][0]["object_id"] in r.stdout


def test_record_verify_on_a_folder_that_is_not_a_record(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = amarvote("record", "verify", str(tmp_path / "empty"), cwd=tmp_path)
    assert r.returncode == 2
    assert "cannot read the record" in r.stdout
