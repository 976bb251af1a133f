"""``record verify`` on Ray (``bridge.verify.verify_on_ray``): chunks of ballots as Ray tasks, the same
answers as the in-process verifier, a chunk whose task fails named with its error, and a worker's death
retried by our policy (``service.jobs.transitions.Policy``), not by Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ray

from bridge.verify import VerifyFailed, verify_on_ray
from cli.errors import explain
from compute.record import open_record
from compute.verify import verify_source
from service.jobs.transitions import Policy
from service.settings import Settings
from tests.compute.record_helpers import Keys, ballots, keys, write


@pytest.fixture(scope="module")
def election() -> tuple[Keys, list]:
    k = keys(candidates=("Ada", "Grace"))
    return k, ballots(k, 10, spoil_every=3)


@pytest.fixture()
def record(election, tmp_path: Path) -> Path:
    k, submitted = election
    return write(k, submitted, tmp_path / "election_record")


def test_a_record_verifies_on_ray_in_chunks_with_progress(record: Path, local_ray: None) -> None:
    seen: list[tuple[int, int]] = []
    outcome = verify_on_ray(Settings(), record, chunk_ballots=4, progress=lambda d, t: seen.append((d, t)))
    assert outcome.problems == [] and outcome.failed_chunks == []
    assert (outcome.ballots, outcome.cast, outcome.spoiled, outcome.chunks) == (10, 7, 3, 3)
    assert len(seen) == 3 and seen[-1] == (10, 10)  # one report per chunk, in the order they land


def test_a_byte_budget_below_one_chunk_sends_one_chunk_at_a_time(record: Path, local_ray: None) -> None:
    # The budget bounds the driver: below a chunk's bytes it waits for each chunk before the next, and
    # still checks them all (it must never wait on nothing).
    outcome = verify_on_ray(Settings(), record, chunk_ballots=4, in_flight_bytes=1)
    assert outcome.problems == [] and outcome.failed_chunks == []
    assert (outcome.ballots, outcome.cast, outcome.spoiled, outcome.chunks) == (10, 7, 3, 3)


def test_problems_found_on_ray_are_those_found_in_process(record: Path, election, local_ray: None) -> None:
    _, submitted = election
    victim = submitted[9]
    f = record / "submitted_ballots" / f"submitted_ballot_{victim.object_id}.json"
    doc = json.loads(f.read_text())
    sel = doc["contests"][0]["ballot_selections"][1]
    sel["proof"]["proof_one_response"] = format(int(sel["proof"]["proof_one_response"], 16) ^ 1, "X")
    f.write_text(json.dumps(doc))
    spoiled = next(b.object_id for b in submitted if b.state.name == "SPOILED")
    (record / "spoiled_ballots" / f"spoiled_ballot_{spoiled}.json").unlink()

    outcome = verify_on_ray(Settings(), record, chunk_ballots=4)
    with open_record(record) as source:
        local = verify_source(source, batch=4)
    assert sorted(outcome.problems) == sorted(local.problems)
    assert any(victim.object_id in p for p in outcome.problems)
    assert f"spoiled ballot {spoiled}: no decryption in spoiled_ballots/" in outcome.problems
    assert "chunk 3 (ballots ballot-000008 .. ballot-000009, 2 ballots)" in outcome.chunks_with_problems
    assert outcome.failed_ballots == sorted({victim.object_id, spoiled})
    assert outcome.failed_chunks == []


def test_chunks_whose_task_fails_are_named_with_the_first_error(record: Path, local_ray: None) -> None:
    # A context whose election key is not in the group: every chunk's proof check refuses to start.
    ctx = json.loads((record / "context.json").read_text())
    ctx["elgamal_public_key"] = "01"
    (record / "context.json").write_text(json.dumps(ctx))
    outcome = verify_on_ray(Settings(), record, chunk_ballots=4)
    assert [f.chunk for f in outcome.failed_chunks if f.chunk.startswith("chunk")] == [
        "chunk 1 (ballots ballot-000000 .. ballot-000003, 4 ballots)",
        "chunk 2 (ballots ballot-000004 .. ballot-000007, 4 ballots)",
        "chunk 3 (ballots ballot-000008 .. ballot-000009, 2 ballots)",
    ]
    assert all(
        f.error == "ValueError: the election public key is not an element of the order-q subgroup"
        for f in outcome.failed_chunks
        if f.chunk.startswith("chunk")
    )
    assert any("elgamal_public_key" in p for p in outcome.problems)  # the header's own check still reports
    assert not any(p.startswith("encrypted tally") for p in outcome.problems), outcome.problems
    message = explain(VerifyFailed(record, outcome.failed_chunks, outcome.chunks))
    assert "could not be checked" in message and "chunk 1 (ballots ballot-000000" in message
    assert "first error:" in message and "ValueError: the election public key" in message
    assert f"amarvote record verify {record}" in message


def _dying(chunk: int, deaths: Path, times: int) -> Any:
    """A unit body whose worker dies (``os._exit``) the first ``times`` times it runs chunk ``chunk``,
    counting the deaths in the file ``deaths``; otherwise the real check."""

    @ray.remote
    def body(key: str, header: dict[str, Any], unit: Any, items: Any) -> Any:
        import os

        from bridge.verify_unit import check_for
        from compute.verify import check_unit

        if unit.chunk is not None and unit.chunk.number == chunk:
            died = int(deaths.read_text()) if deaths.exists() else 0
            if died < times:
                deaths.write_text(str(died + 1))
                os._exit(1)
        return check_unit(check_for(key, header), unit, items)

    return body


def test_a_unit_whose_worker_dies_once_is_retried_by_our_policy(
    record: Path, tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    deaths = tmp_path / "deaths"
    monkeypatch.setattr("bridge.verify.verify_unit", _dying(2, deaths, times=1))
    policy = Policy(max_attempts=3, backoff_seconds=0.0)
    outcome = verify_on_ray(Settings(), record, chunk_ballots=4, policy=policy)
    assert outcome.problems == [] and outcome.failed_chunks == []
    assert (outcome.ballots, outcome.cast, outcome.spoiled, outcome.chunks) == (10, 7, 3, 3)
    assert deaths.read_text() == "1"  # one death, then our second attempt checked it


def test_a_unit_whose_worker_dies_at_every_attempt_is_named_as_failed(
    record: Path, tmp_path: Path, local_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    deaths = tmp_path / "deaths"
    monkeypatch.setattr("bridge.verify.verify_unit", _dying(2, deaths, times=99))
    policy = Policy(max_attempts=2, backoff_seconds=0.0)
    outcome = verify_on_ray(Settings(), record, chunk_ballots=4, policy=policy)
    # Our attempts exactly: Ray ran each attempt once (its retries are off), and nobody else retried it.
    assert deaths.read_text() == "2"
    assert [f.chunk for f in outcome.failed_chunks] == [
        "chunk 2 (ballots ballot-000004 .. ballot-000007, 4 ballots)"
    ]
    assert "Worker" in outcome.failed_chunks[0].error, outcome.failed_chunks[0].error
    # The other units were checked; the comparisons that need every chunk are not made, not passed.
    assert outcome.ballots == 6 and outcome.problems == []
    with pytest.raises(VerifyFailed, match="1 of 3 chunk"):
        raise VerifyFailed(record, outcome.failed_chunks, outcome.chunks)
