"""Ballots the service encrypts, against the real PostgreSQL: no response, row or log line carries the
nonce of a cast ballot; a challenged ballot's nonce does come back and reproduces its encryption; pending
ballots live in one API process only (expiry, bound, unknown ids, another replica); plaintext ballots
repeating a contest or a selection are refused."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers_service import row_counts
from sqlalchemy import Engine, select

import service.elections.crypto as crypto_module
from compute.ballot import BallotBoxState, CiphertextBallot, PlaintextBallot, without_extended_data
from compute.encrypt import encrypt_ballot, submit
from compute.group import from_hex, to_hex
from service.api.app import create_app
from service.db.models import Base
from service.elections import crypto
from service.security.auth import Role, issue_token
from service.settings import Settings

pytestmark = pytest.mark.services

CANDIDATES = ["Alice", "Bob", "Carol"]


def _settings(db_url: str, data_dir: Any, **overrides: Any) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=data_dir,
        server_secret="test-server-secret-0123456789abcdef",
        jwt_secret="test-jwt-secret-0123456789abcdef",
        kdf_time_cost=1,
        kdf_memory_kib=1024,
        kdf_parallelism=1,
        auto_migrate=False,
        **overrides,
    )


@pytest.fixture(scope="module")
def apps(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TestClient]]:
    """Several API processes over one database: the default, another replica, one with a 1 s time-to-live
    for pending ballots and one that holds at most 2."""
    data = tmp_path_factory.mktemp("data")
    variants = {
        "main": {},
        "replica": {},
        "short": {"pending_ballot_seconds": 1},
        "small": {"max_pending_ballots": 2},
    }
    clients = {k: TestClient(create_app(_settings(db_url, data, **v))) for k, v in variants.items()}
    for c in clients.values():
        c.__enter__()
    yield clients
    for c in clients.values():
        c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client(apps: dict[str, TestClient]) -> TestClient:
    return apps["main"]


@pytest.fixture(scope="module")
def admin(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    settings = _settings(db_url, tmp_path_factory.mktemp("token"))
    return {"Authorization": f"Bearer {issue_token(settings, 'admin', Role.ADMIN)}"}


def _ok(r, code: int = 200) -> Any:  # type: ignore[no-untyped-def]
    assert r.status_code == code, r.text
    return r.json()


def _open_election(client: TestClient, admin: dict[str, str], name: str) -> dict[str, Any]:
    body = {"name": name, "number_of_guardians": 1, "quorum": 1, "candidate_names": CANDIDATES}
    e = _ok(client.post("/api/elections", json=body, headers=admin), 201)
    eid = e["election_id"]
    guardians = {"guardian_ids": ["g1"]}
    context = _ok(client.post(f"/api/elections/{eid}/key-ceremony", json=guardians, headers=admin))["context"]
    _ok(client.post(f"/api/elections/{eid}/open", headers=admin))
    manifest = _ok(client.get(f"/api/elections/{eid}/manifest", headers=admin))["manifest"]
    return {"id": eid, "manifest": manifest, "context": context, "url": f"/api/elections/{eid}/ballots"}


@pytest.fixture(scope="module")
def election(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    return _open_election(client, admin, "Challenge")


def _plaintext(bid: str, choice: int) -> dict[str, Any]:
    return {
        "object_id": bid,
        "style_id": "ballot-style-1",
        "contests": [
            {
                "object_id": "contest-1",
                "ballot_selections": [
                    {"object_id": c, "vote": int(i == choice)} for i, c in enumerate(CANDIDATES)
                ],
            }
        ],
    }


@pytest.fixture()
def spy(monkeypatch: pytest.MonkeyPatch) -> list[CiphertextBallot]:
    """Every ciphertext ballot the service makes, nonces included: what must never leak for a cast one."""
    made: list[CiphertextBallot] = []
    real = crypto_module.encrypt_ballot

    def encrypt_and_record(*args: Any, **kwargs: Any) -> CiphertextBallot:
        ct = real(*args, **kwargs)
        made.append(ct)
        return ct

    monkeypatch.setattr(crypto_module, "encrypt_ballot", encrypt_and_record)
    return made


def _nonces(ct: CiphertextBallot) -> list[int]:
    """The master nonce and every nonce derived from it (contests, selections)."""
    out = [ct.nonce]
    for c in ct.contests:
        out.append(c.nonce)
        out += [s.nonce for s in c.ballot_selections]
    assert all(n is not None for n in out)
    return [int(n) for n in out]  # type: ignore[arg-type]


def _forms(n: int) -> list[str]:
    return [to_hex(n), to_hex(n).lower(), str(n)]


def _assert_absent(text: str, ct: CiphertextBallot) -> None:
    for n in _nonces(ct):
        assert not any(f in text for f in _forms(n)), "a nonce of the ballot is in the text"


def _assert_not_in_database(engine: Engine, ct: CiphertextBallot) -> None:
    nonces = _nonces(ct)
    raw = [n.to_bytes(32, "big") for n in nonces]
    forms = [f for n in nonces for f in _forms(n)]
    with engine.connect() as c:
        for table in Base.metadata.sorted_tables:
            for row in c.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        assert not any(r in bytes(value) for r in raw), f"a nonce in {table.name}"
                    else:
                        text = json.dumps(value, default=str)
                        assert not any(f in text for f in forms), f"a nonce in {table.name}"


def _reencrypted(election: dict[str, Any], plaintext: dict[str, Any], nonce: str, ballot: dict) -> dict:
    """The challenge's check: our encryptor, given the opening, rebuilds the ballot (but its
    ``extended_data``, which the service never stores or publishes)."""
    ct = encrypt_ballot(
        PlaintextBallot.from_json(plaintext),
        crypto.internal_manifest(election["manifest"]),
        crypto.context_of(election["context"]),
        from_hex(ballot["code_seed"]),
        from_hex(nonce),
        timestamp=ballot["timestamp"],
    )
    return without_extended_data(submit(ct, BallotBoxState.SPOILED)).to_json()


def _stored(client: TestClient, admin: dict[str, str], election: dict[str, Any], bid: str) -> dict:
    return _ok(client.get(f"{election['url']}/{bid}", headers=admin))


# --------------------------------------------------------------------------------- cast and spoil at once


def test_cast_at_once_returns_no_nonce(
    client: TestClient,
    admin: dict[str, str],
    election: dict[str, Any],
    engine: Engine,
    spy: list[CiphertextBallot],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    r = client.post(f"{election['url']}/encrypt", json={"ballot": _plaintext("cast-1", 0)}, headers=admin)
    body = _ok(r, 201)
    (ct,) = spy
    assert body["state"] == "cast" and body["code"] == to_hex(ct.code)
    assert "nonce" not in body and "plaintext" not in body
    _assert_absent(r.text, ct)
    _assert_absent(caplog.text, ct)
    _assert_not_in_database(engine, ct)
    assert body["ballot"] == _stored(client, admin, election, "cast-1")
    assert body["ballot"]["state"] == 1


def test_spoil_at_once_returns_the_opening(
    client: TestClient, admin: dict[str, str], election: dict[str, Any], engine: Engine, spy: list
) -> None:
    plaintext = _plaintext("spoil-1", 2)
    body = _ok(
        client.post(
            f"{election['url']}/encrypt", json={"ballot": plaintext, "action": "spoil"}, headers=admin
        ),
        201,
    )
    (ct,) = spy
    assert body["state"] == "spoiled" and body["nonce"] == to_hex(ct.nonce)
    assert PlaintextBallot.from_json(body["plaintext"]) == PlaintextBallot.from_json(plaintext)
    stored = _stored(client, admin, election, "spoil-1")
    assert body["ballot"] == stored and stored["state"] == 2
    # Byte-identical ciphertexts and proofs from the opening; any other nonce gives others.
    assert _reencrypted(election, body["plaintext"], body["nonce"], stored) == stored
    wrong = to_hex(from_hex(body["nonce"]) + 1)
    assert _reencrypted(election, body["plaintext"], wrong, stored)["contests"] != stored["contests"]
    _assert_not_in_database(engine, ct)  # returned once, never stored


# --------------------------------------------------------------------------------- pending


def test_pending_then_cast(
    client: TestClient,
    admin: dict[str, str],
    election: dict[str, Any],
    engine: Engine,
    spy: list[CiphertextBallot],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    before, pending = row_counts(engine), client.app.state.ctx.pending
    held_before = len(pending)
    r = client.post(
        f"{election['url']}/encrypt",
        json={"ballot": _plaintext("pending-cast", 1), "action": "pending"},
        headers=admin,
    )
    held = _ok(r, 201)
    (ct,) = spy
    assert held["state"] == "pending" and held["code"] == to_hex(ct.code)
    assert held["ballot"]["state"] == int(BallotBoxState.UNKNOWN)
    expires = datetime.fromisoformat(held["expires_at"])
    assert timedelta(seconds=890) < expires - datetime.now(UTC) <= timedelta(seconds=900)
    assert held["cast_url"] == f"{election['url']}/pending-cast/cast"
    _assert_absent(r.text, ct)
    assert row_counts(engine) == before  # nothing written while pending
    _assert_not_in_database(engine, ct)
    assert len(pending) == held_before + 1

    r = client.post(held["cast_url"], headers=admin)
    cast = _ok(r, 201)
    assert cast["state"] == "cast" and cast["code"] == held["code"] and "nonce" not in cast
    _assert_absent(r.text, ct)
    _assert_absent(caplog.text, ct)
    _assert_not_in_database(engine, ct)
    stored = _stored(client, admin, election, "pending-cast")
    assert stored == cast["ballot"] == {**held["ballot"], "state": 1}  # what the voter saw, cast
    assert len(pending) == held_before

    # Decided once: a second cast, or a challenge after the cast, finds the stored ballot.
    after = row_counts(engine)
    for decision in ("cast", "challenge"):
        r = client.post(f"{election['url']}/pending-cast/{decision}", headers=admin)
        assert r.status_code == 409 and "already submitted" in r.json()["detail"], r.text
        _assert_absent(r.text, ct)
    assert row_counts(engine) == after


def test_pending_then_challenge(
    client: TestClient, admin: dict[str, str], election: dict[str, Any], engine: Engine, spy: list
) -> None:
    plaintext = _plaintext("pending-challenge", 0)
    held = _ok(
        client.post(
            f"{election['url']}/encrypt", json={"ballot": plaintext, "action": "pending"}, headers=admin
        ),
        201,
    )
    (ct,) = spy
    _assert_absent(json.dumps(held), ct)
    opened = _ok(client.post(held["challenge_url"], headers=admin), 201)
    assert opened["state"] == "spoiled" and opened["nonce"] == to_hex(ct.nonce)
    assert PlaintextBallot.from_json(opened["plaintext"]) == PlaintextBallot.from_json(plaintext)
    stored = _stored(client, admin, election, "pending-challenge")
    assert stored == opened["ballot"] == {**held["ballot"], "state": 2}
    assert _reencrypted(election, opened["plaintext"], opened["nonce"], stored) == stored
    _assert_not_in_database(engine, ct)
    r = client.post(held["challenge_url"], headers=admin)
    assert r.status_code == 409 and "nonce" not in r.json()


def test_pending_unknown_expired_or_on_another_replica(
    apps: dict[str, TestClient], admin: dict[str, str], election: dict[str, Any], engine: Engine
) -> None:
    url = election["url"]
    main, replica, short = apps["main"], apps["replica"], apps["short"]
    before = row_counts(engine)
    r = main.post(f"{url}/never-encrypted/cast", headers=admin)
    assert r.status_code == 404 and "encrypt it again" in r.json()["detail"]

    body = {"ballot": _plaintext("on-replica", 0), "action": "pending"}
    _ok(replica.post(f"{url}/encrypt", json=body, headers=admin), 201)
    r = main.post(f"{url}/on-replica/challenge", headers=admin)
    assert r.status_code == 404 and "another replica" in r.json()["detail"]
    assert row_counts(engine) == before
    _ok(replica.post(f"{url}/on-replica/cast", headers=admin), 201)

    body = {"ballot": _plaintext("expires", 0), "action": "pending"}
    _ok(short.post(f"{url}/encrypt", json=body, headers=admin), 201)
    time.sleep(1.3)
    before = row_counts(engine)
    for decision in ("challenge", "cast"):
        r = short.post(f"{url}/expires/{decision}", headers=admin)
        assert r.status_code == 404 and "expired" in r.json()["detail"], r.text
    assert row_counts(engine) == before
    assert len(short.app.state.ctx.pending) == 0


def test_pending_bound(
    apps: dict[str, TestClient], admin: dict[str, str], election: dict[str, Any], engine: Engine
) -> None:
    small, url = apps["small"], election["url"]
    for i in range(2):
        body = {"ballot": _plaintext(f"bound-{i}", 0), "action": "pending"}
        _ok(small.post(f"{url}/encrypt", json=body, headers=admin), 201)
    before = row_counts(engine)
    body = {"ballot": _plaintext("bound-2", 0), "action": "pending"}
    r = small.post(f"{url}/encrypt", json=body, headers=admin)
    assert r.status_code == 429 and "2 ballots are pending" in r.json()["detail"], r.text
    assert row_counts(engine) == before
    # Deciding frees a place.
    _ok(small.post(f"{url}/bound-0/cast", headers=admin), 201)
    _ok(small.post(f"{url}/encrypt", json=body, headers=admin), 201)
    _ok(small.post(f"{url}/bound-1/challenge", headers=admin), 201)
    _ok(small.post(f"{url}/bound-2/cast", headers=admin), 201)
    assert len(small.app.state.ctx.pending) == 0


def test_pending_refusals(client: TestClient, admin: dict[str, str], engine: Engine) -> None:
    e = _open_election(client, admin, "Closing")
    url = e["url"]
    _ok(client.post(f"{url}/encrypt", json={"ballot": _plaintext("taken", 0)}, headers=admin), 201)
    before = row_counts(engine)
    r = client.post(
        f"{url}/encrypt", json={"ballot": _plaintext("taken", 1), "action": "pending"}, headers=admin
    )
    assert r.status_code == 409 and "already submitted" in r.json()["detail"]
    body = {"ballot": _plaintext("twice", 1), "action": "pending"}
    _ok(client.post(f"{url}/encrypt", json=body, headers=admin), 201)
    r = client.post(f"{url}/encrypt", json=body, headers=admin)
    assert r.status_code == 409 and "already pending" in r.json()["detail"]
    assert row_counts(engine) == before
    # Closed before the voter decides: neither decision stores anything or opens the ballot.
    _ok(client.post(f"{url}/encrypt", json={**body, "ballot": _plaintext("late", 0)}, headers=admin), 201)
    _ok(client.post(f"/api/elections/{e['id']}/close", headers=admin))
    before = row_counts(engine)
    for bid, decision in (("twice", "cast"), ("late", "challenge")):
        r = client.post(f"{url}/{bid}/{decision}", headers=admin)
        assert r.status_code == 409 and "closed" in r.json()["detail"] and "nonce" not in r.json()
    assert row_counts(engine) == before
    # Decisions need a token, like the encryption.
    assert client.post(f"{url}/twice/cast", headers={"Authorization": "Bearer nope"}).status_code == 401


# --------------------------------------------------------------------------------- repeated contests


@pytest.mark.parametrize("action", ["cast", "spoil", "pending"])
def test_repeated_contest_or_selection_refused(
    client: TestClient, admin: dict[str, str], election: dict[str, Any], engine: Engine, action: str
) -> None:
    twice_contest = _plaintext("dup-contest", 0)
    twice_contest["contests"].append(_plaintext("x", 1)["contests"][0])
    twice_selection = _plaintext("dup-selection", 0)
    twice_selection["contests"][0]["ballot_selections"].append({"object_id": "Alice", "vote": 0})
    before, held = row_counts(engine), len(client.app.state.ctx.pending)
    for plaintext, named in (
        (twice_contest, "contest contest-1 appears more than once"),
        (twice_selection, "selection Alice appears more than once"),
    ):
        r = client.post(
            f"{election['url']}/encrypt", json={"ballot": plaintext, "action": action}, headers=admin
        )
        assert r.status_code == 422 and named in r.json()["detail"], r.text
    assert row_counts(engine) == before
    assert len(client.app.state.ctx.pending) == held


def test_openapi_declares_the_decisions(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for decision in ("cast", "challenge"):
        op = paths[f"/api/elections/{{election_id}}/ballots/{{ballot_id}}/{decision}"]["post"]
        assert {"201", "401", "403", "404", "409"} <= set(op["responses"])
    encrypt = paths["/api/elections/{election_id}/ballots/encrypt"]["post"]
    assert {"201", "404", "409", "422", "429"} <= set(encrypt["responses"])
