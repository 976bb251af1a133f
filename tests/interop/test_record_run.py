"""``amarvote record run`` on a record the reference made reproduces the reference's counts.

The record's election and ballots are imported, then tallied, decrypted with guardians 4 and 5
missing (compensated) and combined as jobs through the embedded pipeline (SQLite, outbox, local
Ray), and the record we write verifies and carries the reference's spoiled ballots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.record import run_record
from compute.record import read_record
from compute.verify import verify_record
from service.settings import Settings
from tests.conftest import TEST_SERVER_SECRET
from tests.oracle import run_oracle


@pytest.fixture()
def embedded_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_ray: None) -> Settings:
    from service.settings import get_settings

    monkeypatch.delenv("AMARVOTE_DATABASE_URL", raising=False)
    monkeypatch.delenv("AMARVOTE_AMQP_URL", raising=False)
    monkeypatch.setenv("AMARVOTE_DATA_DIR", str(tmp_path / "data"))
    # The secret the session's Ray workers were started with (production sets it on every node).
    monkeypatch.setenv("AMARVOTE_SERVER_SECRET", TEST_SERVER_SECRET)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_record_run_reproduces_the_reference_counts(reference_election, embedded_settings, tmp_path) -> None:
    ref = reference_election
    missing = list(ref.summary["missing_guardian_ids"])
    assert missing, "the reference election should have missing guardians to compensate"
    out = tmp_path / "out"

    summary = run_record(embedded_settings, ref.record_dir, ref.private_dir, missing, out, chunk_size=2)

    assert summary["counts"] == ref.summary["tally"]
    assert summary["spoiled"] == sorted(ref.summary["spoiled_ballot_ids"])
    ours = read_record(summary["record_dir"])
    assert verify_record(ours) == []
    theirs = read_record(ref.record_dir)
    assert ours.encrypted_tally is not None and theirs.encrypted_tally is not None
    for cid, contest in theirs.encrypted_tally.contests.items():
        for sid, sel in contest.selections.items():
            assert ours.encrypted_tally.contests[cid].selections[sid].ciphertext == sel.ciphertext
    for bid, spoiled in theirs.spoiled_ballots.items():
        assert ours.spoiled_ballots[bid].counts() == spoiled.counts()
    assert json.loads((summary["record_dir"] / "context.json").read_text()) == json.loads(
        (ref.record_dir / "context.json").read_text()
    )
    # The other direction: the reference reads the record our pipeline wrote (the aggregate's decryption,
    # merged from its slices, and the spoiled ballots) and decrypts our encrypted tally to the same counts.
    n_available = int(ref.summary["number_of_guardians"]) - len(missing)
    out = run_oracle("reference_decrypts_ours.py", summary["record_dir"], ref.private_dir, str(n_available))
    assert out["tally"] == out["our_tally_json"] == ref.summary["tally"]
    assert out["spoiled"] == out["our_spoiled_json"]
    assert sorted(out["our_spoiled_json"]) == sorted(ref.summary["spoiled_ballot_ids"])


def test_record_run_refuses_an_unknown_missing_guardian(
    reference_election, embedded_settings, tmp_path
) -> None:
    import typer

    with pytest.raises(typer.BadParameter, match="not guardians"):
        run_record(
            embedded_settings,
            reference_election.record_dir,
            reference_election.private_dir,
            ["nobody"],
            tmp_path / "out",
            5,
        )


def test_record_run_refuses_a_present_guardian_without_its_key(
    reference_election, embedded_settings, tmp_path
) -> None:
    import shutil

    import typer

    private = tmp_path / "private"
    shutil.copytree(reference_election.private_dir, private)
    present = sorted(private.glob("private_guardians/*.json"))[0]
    present.unlink()
    with pytest.raises(typer.BadParameter, match="no private record for present guardian"):
        run_record(embedded_settings, reference_election.record_dir, private, [], tmp_path / "out", 5)
    assert not Path(embedded_settings.sqlalchemy_url.removeprefix("sqlite:///")).exists(), "nothing written"


def test_an_interrupted_record_run_resumes_from_the_database(
    reference_election, embedded_settings, tmp_path, monkeypatch
) -> None:
    """The run dies after its decryption jobs were started (here: the combine step raises); ``--resume``
    continues from what the database holds and reaches the reference's counts."""
    from cli.pipeline import Pipeline

    ref = reference_election
    missing = list(ref.summary["missing_guardian_ids"])

    def interrupted(self, election_id):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("the operator's terminal closed")

    monkeypatch.setattr(Pipeline, "combine", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_record(
            embedded_settings, ref.record_dir, ref.private_dir, missing, tmp_path / "out", chunk_size=2
        )
    monkeypatch.undo()
    # The embedded default keeps its SQLite in the data directory: resume against it.
    from service.db.models import Election
    from service.db.session import session_factory, transaction

    with transaction(session_factory(embedded_settings.sqlalchemy_url)) as s:
        (eid,) = s.query(Election.id).all()[-1:]
    summary = run_record(
        embedded_settings, ref.record_dir, ref.private_dir, missing, tmp_path / "out", 2, resume=eid[0]
    )
    assert summary["counts"] == ref.summary["tally"]
    assert verify_record(read_record(summary["record_dir"])) == []
