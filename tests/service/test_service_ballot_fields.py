"""Untrusted fields of submitted ballots (issue 17), against the real PostgreSQL: a tracking code must
chain as the reference computes it and be unique in its election (409 naming it, single, bulk, within a
request and between concurrent requests); proof usage strings are the reference's only; ``extended_data``
is neither stored nor published; numbers out of range are 422 naming the field, never 500. A refusal
changes no row."""

from __future__ import annotations

import dataclasses
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
from compute.constants import Q
from compute.group import to_hex
from service.db.models import Ballot
from service.db.session import transaction
from service.elections import ballots as ballot_svc
from service.errors import Conflict
from service.settings import Settings
from tests.compute.ballot_helpers import plaintext

pytestmark = pytest.mark.services

CHOICES = TWO_CONTEST_CHOICES
CHAIN = "tracking code does not chain from its code seed, timestamp and crypto hash"


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(db_url, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def election(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return open_two_contest_election(client, admin, "Fields")


def _refused(client: TestClient, engine: Engine, url: str, code: int, *matches: str, **kw: Any) -> str:
    before = row_counts(engine)
    r = client.post(url, **kw)
    assert r.status_code == code, r.text
    detail: str = r.json()["detail"]
    for m in matches:
        assert m in detail, detail
    assert row_counts(engine) == before
    return detail


def _ballots(engine: Engine, eid: int) -> int:
    with engine.connect() as c:
        return int(c.scalar(select(func.count()).select_from(Ballot).where(Ballot.election_id == eid)) or 0)


# ------------------------------------------------------------------------------------- tracking codes


def test_a_forged_code_is_refused_single_and_bulk(
    client: TestClient, admin: dict[str, str], engine: Engine, election: dict[str, Any]
) -> None:
    """The attack: a fresh valid ballot carrying another voter's tracking code (two ballots, one receipt)."""
    alice = device_ballot(election, "code-alice")
    ok(client.post(election["url"], json={"ballot": alice.to_json()}, headers=admin), 201)
    mallory = dataclasses.replace(device_ballot(election, "code-mallory", 1), code=alice.code)
    _refused(
        client,
        engine,
        election["url"],
        422,
        f"ballot code-mallory: {CHAIN}",
        json={"ballot": mallory.to_json()},
        headers=admin,
    )
    good = device_ballot(election, "code-good")
    bulk = [{"ballot": good.to_json()}, {"ballot": mallory.to_json()}]
    _refused(
        client,
        engine,
        election["url"] + "/bulk",
        422,
        f"ballot code-mallory: {CHAIN}",
        json={"ballots": bulk},
        headers=admin,
    )


def _prepared(election: dict[str, Any], bid: str, code_of: SubmittedBallot | None = None) -> Any:
    """A checked ballot's row, its code replaced by another's: what the unique index alone must stop (a
    code that chains is a function of the ballot's hash, so only a row written past the checks repeats
    one)."""
    p = ballot_svc.prepared(device_ballot(election, bid))
    return p if code_of is None else dataclasses.replace(p, code=to_hex(code_of.code))


def _store(engine: Engine, eid: int, rows: list[Any]) -> list[int]:
    with transaction(engine) as s:
        return ballot_svc.store(s, eid, rows)


def test_a_repeated_code_is_409_stored_bulk_and_within_a_request(
    engine: Engine, election: dict[str, Any]
) -> None:
    eid = election["id"]
    first = device_ballot(election, "dup-first")
    _store(engine, eid, [ballot_svc.prepared(first)])
    code = to_hex(first.code)
    before = row_counts(engine)
    with pytest.raises(
        Conflict, match=f"tracking code {code} of ballot dup-second is already ballot dup-first's"
    ):
        _store(engine, eid, [_prepared(election, "dup-second", first)])
    with pytest.raises(
        Conflict, match=f"tracking code {code} of ballot dup-bulk-2 is already ballot dup-first's"
    ):
        _store(engine, eid, [_prepared(election, "dup-bulk-1"), _prepared(election, "dup-bulk-2", first)])
    twin_of = device_ballot(election, "dup-twin-1")
    twins = [ballot_svc.prepared(twin_of), _prepared(election, "dup-twin-2", twin_of)]
    with pytest.raises(
        Conflict,
        match=f"tracking code {to_hex(twin_of.code)} of ballot dup-twin-2 is already ballot dup-twin-1's",
    ):
        _store(engine, eid, twins)
    assert row_counts(engine) == before
    # the same code in another election is no repeat
    other = _other_election(engine, eid)
    _store(engine, other, [_prepared(election, "dup-elsewhere", first)])


def _other_election(engine: Engine, eid: int) -> int:
    from service.db.models import Election

    with transaction(engine) as s:
        e = s.get(Election, eid)
        assert e is not None
        copy = Election(
            name="Fields 2",
            state="open",
            manifest=e.manifest,
            manifest_hash=e.manifest_hash,
            manifest_version=e.manifest_version,
            number_of_guardians=1,
            quorum=1,
            context=e.context,
        )
        s.add(copy)
        s.flush()
        return int(copy.id)


def test_concurrent_ballots_with_one_code_store_exactly_one(engine: Engine, election: dict[str, Any]) -> None:
    """Eight requests, each a different ballot with one code, committed at once: the unique index lets one
    through; the others wait for it and are refused naming the code."""
    eid = election["id"]
    base = device_ballot(election, "race-code-0")
    rows = [ballot_svc.prepared(base)] + [_prepared(election, f"race-code-{i}", base) for i in range(1, 8)]
    before = _ballots(engine, eid)
    start = threading.Barrier(len(rows))
    outcomes: dict[str, str] = {}

    def submit_one(p: ballot_svc.PreparedBallot) -> None:
        start.wait()
        try:
            _store(engine, eid, [p])
            outcomes[p.object_id] = "stored"
        except Conflict as exc:
            outcomes[p.object_id] = exc.reason

    threads = [threading.Thread(target=submit_one, args=(p,)) for p in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [b for b, o in outcomes.items() if o == "stored"]
    assert len(outcomes) == 8 and len(winners) == 1, outcomes
    code = to_hex(base.code)
    assert all(
        o == f"tracking code {code} of ballot {b} is already ballot {winners[0]}'s"
        for b, o in outcomes.items()
        if b != winners[0]
    ), outcomes
    assert _ballots(engine, eid) == before + 1


# ------------------------------------------------------------------------------------- free-text channels


def test_extended_data_is_neither_stored_nor_published(
    client: TestClient, admin: dict[str, str], engine: Engine, election: dict[str, Any]
) -> None:
    d = device_ballot(election, "marked").to_json()
    d["contests"][0]["extended_data"]["data"] = "voter-id:ALICE-SMITH-1234 " + "A" * 3_000_000
    ok(client.post(election["url"], json={"ballot": d}, headers=admin), 201)
    served = ok(client.get(f"{election['url']}/marked", headers=admin))
    assert [c["extended_data"] for c in served["contests"]] == [None, None]
    with engine.connect() as c:
        payload = c.scalar(
            select(Ballot.payload).where(Ballot.election_id == election["id"], Ballot.object_id == "marked")
        )
    assert payload is not None and b"ALICE" not in payload and len(payload) < 100_000
    # what the hashes cover is untouched
    assert {k: served[k] for k in ("code", "crypto_hash", "timestamp")} == {
        k: d[k] for k in ("code", "crypto_hash", "timestamp")
    }
    # the service's own encryption publishes none either
    r = ok(
        client.post(
            election["url"] + "/encrypt",
            json={"ballot": plaintext("kiosk-ext", CHOICES[1]).to_json(), "action": "cast"},
            headers=admin,
        ),
        201,
    )
    assert [c["extended_data"] for c in r["ballot"]["contests"]] == [None, None]


def test_a_chosen_proof_usage_is_422_naming_ballot_contest_and_selection(
    client: TestClient, admin: dict[str, str], engine: Engine, election: dict[str, Any]
) -> None:
    d = device_ballot(election, "usage").to_json()
    d["contests"][1]["ballot_selections"][2]["proof"]["usage"] = "voter-id:ALICE-SMITH-1234"
    _refused(
        client,
        engine,
        election["url"],
        422,
        "ballot usage",
        "contests[council].ballot_selections[council-2].proof.usage",
        "Prove selection's value (0 or 1)",
        json={"ballot": d},
        headers=admin,
    )
    d = device_ballot(election, "usage").to_json()
    d["contests"][0]["proof"]["usage"] = "Prove knowledge of secret value"  # the reference's, another proof's
    _refused(
        client,
        engine,
        election["url"] + "/bulk",
        422,
        "ballot usage",
        "contests[contest-1].proof.usage",
        json={"ballots": [{"ballot": d}]},
        headers=admin,
    )


# ------------------------------------------------------------------------------------- numbers out of range

OUT_OF_RANGE = [
    # (field path, change) each answered 500 before
    ("timestamp", lambda d: d.__setitem__("timestamp", 2**70)),
    ("code", lambda d: d.__setitem__("code", to_hex(2**256))),
    ("code_seed", lambda d: d.__setitem__("code_seed", "-1")),
    (
        "contests[contest-1].extended_data.pad",
        lambda d: d["contests"][0]["extended_data"].__setitem__("pad", "-1"),
    ),
    (
        "contests[contest-1].extended_data.pad",
        lambda d: d["contests"][0]["extended_data"].__setitem__("pad", to_hex(2**5000)),
    ),
    (
        "contests[contest-1].proof.constant",
        lambda d: d["contests"][0]["proof"].__setitem__("constant", 2**64),
    ),
    ("contests[council].sequence_order", lambda d: d["contests"][1].__setitem__("sequence_order", 2**40)),
    ("crypto_hash", lambda d: d.__setitem__("crypto_hash", to_hex(Q))),
]


@pytest.mark.parametrize(
    ("field", "change"), OUT_OF_RANGE, ids=[f"{f}-{i}" for i, (f, _) in enumerate(OUT_OF_RANGE)]
)
def test_out_of_range_numbers_are_422_naming_the_field(
    client: TestClient,
    admin: dict[str, str],
    engine: Engine,
    election: dict[str, Any],
    field: str,
    change: Any,
) -> None:
    d = device_ballot(election, "range").to_json()
    change(d)
    _refused(
        client, engine, election["url"], 422, "ballot range", f"{field}: ", json={"ballot": d}, headers=admin
    )
    _refused(
        client,
        engine,
        election["url"] + "/bulk",
        422,
        "ballot range",
        f"{field}: ",
        json={"ballots": [{"ballot": d}]},
        headers=admin,
    )
