"""``record verify`` on Ray accounts for every entry as the in-process verifier does: an extra ballot file is
a problem naming it, and the count is of the ballots checked."""

from __future__ import annotations

from pathlib import Path

from bridge.verify import verify_on_ray
from service.settings import Settings
from tests.compute.record_helpers import ballots, keys, write


def test_an_unmapped_entry_fails_verify_on_ray_naming_it(tmp_path: Path, local_ray: None) -> None:
    k = keys(candidates=("Ada",))
    record = write(k, ballots(k, 4, spoil_every=2), tmp_path / "election_record")
    (record / "submitted_ballots" / "submitted_ballot_sub").mkdir()
    (record / "submitted_ballots" / "submitted_ballot_sub" / "x.json").write_text("{}")
    outcome = verify_on_ray(Settings(), record, chunk_ballots=2)
    assert any(p.startswith("submitted_ballots/submitted_ballot_sub/x.json:") for p in outcome.problems)
    assert outcome.ballots == 4 and not outcome.failed_chunks
