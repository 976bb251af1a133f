"""Clones: a stored ballot's selection ciphertexts resubmitted under a new id (its crypto hash and code
recomputed from public data, so every proof verifies) are refused with 409 naming the ballot they repeat,
through every way a ballot gets in, and nothing is stored. Against the real PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers_service import (
    TWO_CONTEST_CHOICES,
    api_settings,
    device_ballot,
    ok,
    open_two_contest_election,
    row_counts,
)
from sqlalchemy import Engine, func, select

from compute.ballot import SubmittedBallot
from service.db.models import Ballot, BallotCiphertext
from service.db.session import transaction
from service.elections import ballots as ballot_svc
from service.errors import Conflict
from service.settings import Settings
from tests.compute.ballot_helpers import clone, plaintext

pytestmark = pytest.mark.services

CHOICES = TWO_CONTEST_CHOICES


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(db_url, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def election(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return open_two_contest_election(client, admin, "Clones")


def _cast(client: TestClient, admin: dict[str, str], e: dict[str, Any], b: SubmittedBallot) -> None:
    ok(client.post(e["url"], json={"ballot": b.to_json()}, headers=admin), 201)


def _refused(client: TestClient, engine: Engine, url: str, match: str, **kw: Any) -> None:
    before = row_counts(engine)
    r = client.post(url, **kw)
    assert r.status_code == 409, r.text
    assert match in r.json()["detail"], r.json()["detail"]
    assert row_counts(engine) == before


def _ballots(engine: Engine, eid: int) -> int:
    with engine.connect() as c:
        return c.scalar(select(func.count()).select_from(Ballot).where(Ballot.election_id == eid))


def test_single_clone_is_refused_naming_the_original(
    client: TestClient, admin: dict[str, str], engine: Engine, election: dict[str, Any]
) -> None:
    original = device_ballot(election, "orig-single")
    _cast(client, admin, election, original)
    for i in range(3):  # the attack that was seen: three new ids for one cast ballot
        _refused(
            client,
            engine,
            election["url"],
            f"ballot clone-{i} repeats a selection ciphertext of ballot orig-single",
            json={"ballot": clone(original, f"clone-{i}").to_json(), "action": "cast"},
            headers=admin,
        )
    # Spoiled, a clone would have the cast vote decrypted: refused as well.
    _refused(
        client,
        engine,
        election["url"],
        "of ballot orig-single",
        json={"ballot": clone(original, "clone-spoiled").to_json(), "action": "spoil"},
        headers=admin,
    )
    # The stored fingerprints: one per selection, placeholders included (4 + 6).
    with engine.connect() as c:
        seq = c.scalar(select(Ballot.seq).where(Ballot.object_id == "orig-single"))
        assert c.scalar(select(func.count()).where(BallotCiphertext.ballot_seq == seq)) == 10


def test_partial_clone_is_refused(
    client: TestClient, admin: dict[str, str], engine: Engine, election: dict[str, Any]
) -> None:
    original = device_ballot(election, "orig-partial", 0)
    _cast(client, admin, election, original)
    fresh = device_ballot(election, "mixed", 1)
    mixed = clone(fresh, "mixed", (fresh.contests[0], original.contests[1]))  # council copied only
    _refused(
        client,
        engine,
        election["url"],
        "ballot mixed repeats a selection ciphertext of ballot orig-partial",
        json={"ballot": mixed.to_json()},
        headers=admin,
    )
    _cast(client, admin, election, fresh)  # the honest ballot it was made from is still accepted


def test_bulk_with_a_clone_stores_none(
    client: TestClient, admin: dict[str, str], engine: Engine, election: dict[str, Any]
) -> None:
    original = device_ballot(election, "orig-bulk")
    _cast(client, admin, election, original)
    good = device_ballot(election, "bulk-good")
    bulk = [{"ballot": good.to_json()}, {"ballot": clone(original, "bulk-clone").to_json()}]
    _refused(
        client,
        engine,
        election["url"] + "/bulk",
        "ballot bulk-clone repeats a selection ciphertext of ballot orig-bulk",
        json={"ballots": bulk},
        headers=admin,
    )
    # Two ballots of one request sharing a ciphertext: the second names the first.
    twin = [{"ballot": good.to_json()}, {"ballot": clone(good, "bulk-twin").to_json()}]
    _refused(
        client,
        engine,
        election["url"] + "/bulk",
        "ballot bulk-twin repeats a selection ciphertext of ballot bulk-good",
        json={"ballots": twin},
        headers=admin,
    )
    assert (
        ok(client.post(election["url"] + "/bulk", json={"ballots": bulk[:1]}, headers=admin), 201)["accepted"]
        == 1
    )


def test_clone_of_a_ballot_the_servicedevice_ballot(
    client: TestClient, admin: dict[str, str], engine: Engine, election: dict[str, Any]
) -> None:
    r = ok(
        client.post(
            election["url"] + "/encrypt",
            json={"ballot": plaintext("kiosk", CHOICES[1]).to_json(), "action": "cast"},
            headers=admin,
        ),
        201,
    )
    kiosk = SubmittedBallot.from_json({**r["ballot"], "state": 1})
    _refused(
        client,
        engine,
        election["url"],
        "ballot kiosk-copy repeats a selection ciphertext of ballot kiosk",
        json={"ballot": clone(kiosk, "kiosk-copy").to_json()},
        headers=admin,
    )


def test_concurrent_clones_store_exactly_one(engine: Engine, election: dict[str, Any]) -> None:
    """Eight requests carrying one ballot under eight ids, committed at once: the unique index lets one
    through; the others wait for it and are refused naming it."""
    eid = election["id"]
    base = device_ballot(election, "race-0")
    with transaction(engine) as s:
        snap = ballot_svc.snapshot_for_ballots(s, eid)
    prepared = [
        ballot_svc.prepare_submitted(snap, clone(base, f"race-{i}").to_json(), "cast") for i in range(8)
    ]
    before = _ballots(engine, eid)
    start = threading.Barrier(len(prepared))
    outcomes: dict[str, str] = {}

    def submit_one(p: ballot_svc.PreparedBallot) -> None:
        start.wait()
        try:
            with transaction(engine) as s:
                ballot_svc.store(s, eid, [p])
            outcomes[p.object_id] = "stored"
        except Conflict as exc:
            outcomes[p.object_id] = exc.reason

    threads = [threading.Thread(target=submit_one, args=(p,)) for p in prepared]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [b for b, o in outcomes.items() if o == "stored"]
    assert len(outcomes) == 8 and len(winners) == 1, outcomes
    assert all(
        o == f"ballot {b} repeats a selection ciphertext of ballot {winners[0]}"
        for b, o in outcomes.items()
        if b != winners[0]
    ), outcomes
    assert _ballots(engine, eid) == before + 1


def test_record_import_refuses_a_clone(engine: Engine, election: dict[str, Any]) -> None:
    """``amarvote record run`` imports a record's ballots in batches through prepare_bulk + store."""
    eid = election["id"]
    record = [device_ballot(election, f"rec-{i}", i % 2) for i in range(3)]

    def import_batch(ballots: list[SubmittedBallot]) -> None:
        with transaction(engine) as s:
            snap = ballot_svc.snapshot_for_ballots(s, eid)
            ballot_svc.store(s, eid, ballot_svc.prepare_bulk(snap, [(b.to_json(), "cast") for b in ballots]))

    import_batch(record[:2])
    before = row_counts(engine)
    # A later batch cloning a ballot of an earlier one, and one batch holding both.
    with pytest.raises(Conflict, match="ballot rec-copy repeats a selection ciphertext of ballot rec-1"):
        import_batch([record[2], clone(record[1], "rec-copy")])
    with pytest.raises(Conflict, match="ballot rec-copy repeats a selection ciphertext of ballot rec-2"):
        import_batch([record[2], clone(record[2], "rec-copy")])
    assert row_counts(engine) == before
    import_batch(record[2:])
