"""The API end to end against the real PostgreSQL: election → keys → ballots → the four jobs, and every
refusal leaves the database unchanged. The bridge is not running: job execution is simulated by
writing what its workers would (status, shares) so creation rules can be exercised."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers_service import api_settings, complete_tally, custodial_keys, row_counts
from pydantic import SecretStr
from sqlalchemy import Engine, select, update

from compute.ballot import BallotBoxState
from compute.encrypt import encrypt_ballot, submit
from compute.group import from_hex
from service.api.app import create_app
from service.db.models import (
    Ballot,
    ChunkTask,
    CompensatedShare,
    DecryptionShare,
    ElectionCenter,
    ElectionJob,
    GuardianKeyEscrow,
    Outbox,
)
from service.db.session import session_factory, transaction
from service.elections import crypto
from service.security.auth import issue_token
from service.settings import Settings

PASS = {"g1": "correct horse battery", "g2": "staple gun purple", "g3": "tuesday morning tea"}


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(db_url, tmp_path_factory.mktemp("data"))


def _ok(r, code: int = 200) -> Any:  # type: ignore[no-untyped-def]
    assert r.status_code == code, r.text
    return r.json()


def _plaintext(election: dict[str, Any], bid: str, choice: int) -> dict[str, Any]:
    contest = election["manifest"]["contests"][0]
    ids = [s["object_id"] for s in contest["ballot_selections"]]
    return {
        "object_id": bid,
        "style_id": "ballot-style-1",
        "contests": [
            {
                "object_id": contest["object_id"],
                "ballot_selections": [
                    {"object_id": sid, "vote": int(i == choice)} for i, sid in enumerate(ids)
                ],
            }
        ],
    }


def _encrypted(election: dict[str, Any], bid: str, choice: int) -> dict[str, Any]:
    """An encrypted ballot made outside the service (a voting device), as the reference's JSON."""
    internal = crypto.internal_manifest(election["manifest"])
    ct = encrypt_ballot(
        crypto.PlaintextBallot.from_json(_plaintext(election, bid, choice)),
        internal,
        crypto.context_of(election["context"]),
        from_hex("AB"),
    )
    return submit(ct, BallotBoxState.CAST).to_json()


def _new_election(
    client: TestClient, admin: dict[str, str], n: int = 3, k: int = 2, name: str = "Board"
) -> dict[str, Any]:
    e = _ok(
        client.post(
            "/api/elections",
            json={
                "name": name,
                "number_of_guardians": n,
                "quorum": k,
                "candidate_names": ["Alice", "Bob", "Carol"],
                "party_names": ["Red", "Blue", "Red"],
            },
            headers=admin,
        ),
        201,
    )
    kc = custodial_keys(client, admin, e["election_id"], {g: PASS[g] for g in list(PASS)[:n]})
    manifest = _ok(client.get(f"/api/elections/{e['election_id']}/manifest", headers=admin))["manifest"]
    return {
        **e,
        "manifest": manifest,
        "context": kc["context"],
        "guardians": {g["guardian_id"]: g for g in kc["guardians"]},
    }


@pytest.fixture(scope="module")
def flow(client: TestClient, admin: dict[str, str], engine: Engine) -> dict[str, Any]:
    """An election with keys, cast and spoiled ballots, closed and with a tally job planned."""
    e = _new_election(client, admin)
    eid = e["election_id"]
    _ok(client.post(f"/api/elections/{eid}/open", headers=admin))
    nonces = {}
    for i, (choice, action) in enumerate([(0, "cast"), (1, "cast"), (0, "cast"), (2, "spoil")]):
        r = _ok(
            client.post(
                f"/api/elections/{eid}/ballots/encrypt",
                json={"ballot": _plaintext(e, f"kiosk-{i}", choice), "action": action},
                headers=admin,
            ),
            201,
        )
        assert r["state"] == ("spoiled" if action == "spoil" else "cast")
        # Only a challenged (spoiled) ballot's nonce comes back (test_service_challenge.py: the rest).
        assert ("nonce" in r) == (action == "spoil")
        if action == "spoil":
            nonces[r["ballot_id"]] = r["nonce"]
    _ok(
        client.post(
            f"/api/elections/{eid}/ballots", json={"ballot": _encrypted(e, "device-0", 1)}, headers=admin
        ),
        201,
    )
    bulk = [{"ballot": _encrypted(e, f"bulk-{i}", i % 3), "action": "cast"} for i in range(2)]
    assert (
        _ok(client.post(f"/api/elections/{eid}/ballots/bulk", json={"ballots": bulk}, headers=admin), 201)[
            "accepted"
        ]
        == 2
    )
    _ok(client.post(f"/api/elections/{eid}/close", headers=admin))
    return {**e, "nonces": nonces}


def test_election_keys_and_ballots(
    flow: dict[str, Any], client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    eid = flow["election_id"]
    summary = _ok(client.get(f"/api/elections/{eid}", headers=admin))
    assert summary["state"] == "closed" and summary["keys_ready"]
    assert summary["ballots"] == {"cast": 6, "spoiled": 1, "total": 7}
    guardians = _ok(client.get(f"/api/elections/{eid}/guardians", headers=admin))
    assert [g["guardian_id"] for g in guardians] == ["g1", "g2", "g3"]
    assert all("secret_key" not in json.dumps(g) and "polynomial" not in json.dumps(g) for g in guardians)
    # Credential files are sealed: nothing of the private key is readable without the passphrase.
    cred = flow["guardians"]["g1"]["credentials"]
    assert cred["kdf"]["name"] == "argon2id" and cred["owner"]["guardian_id"] == "g1"
    assert "secret_key" not in json.dumps(cred)
    with session_factory(engine)() as s:
        payloads = s.scalars(select(Ballot.payload).where(Ballot.election_id == eid)).all()
        assert len(payloads) == 7
        # The service never stores an encryption nonce.
        for nonce in flow["nonces"].values():
            raw = int(nonce, 16).to_bytes(32, "big")
            assert all(raw not in p for p in payloads)
        assert all(crypto.decode(p).nonce is None for p in payloads)
    b = _ok(client.get(f"/api/elections/{eid}/ballots/kiosk-3", headers=admin))
    assert b["object_id"] == "kiosk-3" and b["state"] == 2


def _decrypt(client: TestClient, flow: dict[str, Any], g: str, **extra: Any):  # type: ignore[no-untyped-def]
    gi = flow["guardians"][g]
    body = {
        "election_id": flow["election_id"],
        "guardian_id": g,
        "credentials": gi["credentials"],
        "passphrase": PASS[g],
        **extra,
    }
    return client.post(
        "/api/decryption/create", json=body, headers={"Authorization": f"Bearer {gi['token']}"}
    )


def test_four_jobs_created_and_polled(
    flow: dict[str, Any], client: TestClient, admin: dict[str, str], engine: Engine, settings: Settings
) -> None:
    eid = flow["election_id"]
    # Refusals before a tally exists.
    before = row_counts(engine)
    assert _decrypt(client, flow, "g1").status_code == 409
    assert client.post("/api/combine/decryption", json={"election_id": eid}, headers=admin).status_code == 409
    assert row_counts(engine) == before

    # 1. Tally: 7 ballots in chunks of 3 -> 3 chunks (+ the election row).
    t = _ok(client.post("/api/tally/create", json={"election_id": eid, "chunk_size": 3}, headers=admin))
    assert (
        t["status"] == "QUEUED" and t["totalChunks"] == 3 and t["pollUrl"] == f"/api/jobs/{t['jobId']}/status"
    )
    st = _ok(client.get(t["pollUrl"], headers=admin))
    assert (st["operationType"], st["processedChunks"], st["progressPercent"]) == ("TALLY", 0, 0.0)
    assert st["metadata"] == {"chunk_size": 3, "ballot_count": 7}
    with session_factory(engine)() as s:
        chunks = s.scalars(
            select(ElectionCenter)
            .where(ElectionCenter.election_id == eid)
            .order_by(ElectionCenter.chunk_number)
        ).all()
        assert [(c.kind, c.ballot_count) for c in chunks] == [
            ("election", 7),
            ("chunk", 3),
            ("chunk", 3),
            ("chunk", 1),
        ]
        assert len(s.scalars(select(ChunkTask).where(ChunkTask.job_id == t["jobId"])).all()) == 3
    assert client.post("/api/tally/create", json={"election_id": eid}, headers=admin).status_code == 409
    complete_tally(engine, t["jobId"])

    # 2. + 3. Partial decryption of g1 with g3 missing (compensated child), then g2's: one task per
    # decryption unit (the aggregate's one slice and the one run of spoiled ballots), none per chunk.
    before = row_counts(engine)
    d1 = _ok(_decrypt(client, flow, "g1", missing_guardian_ids=["g3"]))
    after = row_counts(engine)
    assert after["election_job"] == before["election_job"] + 2
    assert after["election_center"] == before["election_center"] + 2
    assert after["chunk_task"] == before["chunk_task"] + 4 and after["outbox"] == before["outbox"] + 4
    assert after["guardian_key_escrow"] == before["guardian_key_escrow"] + 2  # one per job
    assert d1["totalChunks"] == 2 and len(d1["compensatedJobs"]) == 1
    assert d1["compensatedJobs"][0]["missingGuardianId"] == "g3"
    assert _decrypt(client, flow, "g1").status_code == 409  # a duplicate run
    d2 = _ok(_decrypt(client, flow, "g2"))
    # g2 names g3 later: only its compensated job is created, under its existing partial job.
    d2c = _ok(_decrypt(client, flow, "g2", missing_guardian_ids=["g3"]))
    assert d2c["jobId"] is None and len(d2c["compensatedJobs"]) == 1
    with session_factory(engine)() as s:
        child = s.get(ElectionJob, d2c["compensatedJobs"][0]["jobId"])
        assert child is not None and str(child.parent_job_id) == d2["jobId"]
        escrows = s.scalars(select(GuardianKeyEscrow).where(GuardianKeyEscrow.election_id == eid)).all()
        assert sorted((x.guardian_id, x.missing_guardian_id or "") for x in escrows) == [
            ("g1", ""),
            ("g1", "g3"),
            ("g2", ""),
            ("g2", "g3"),
        ]
        # Sealed under the server secret: no key material in the clear.
        for x in escrows:
            assert b"secret_key" not in x.sealed and b"coordinate" not in x.sealed
        from compute.guardian import CompensationKey, DecryptionKey
        from service.elections.escrow import load_key
        from service.security.secrets import server_secret

        # Each holds no more than its job needs: the secret key, or one missing guardian's coordinate.
        for x in escrows:
            key = load_key(s, x.job_id, server_secret(settings))
            if x.missing_guardian_id is None:
                assert isinstance(key, DecryptionKey) and key.guardian_id == x.guardian_id
                assert set(key.to_json()) == {"guardian_id", "sequence_order", "secret_key", "public_key"}
            else:
                assert isinstance(key, CompensationKey) and key.missing_guardian_id == x.missing_guardian_id
                assert "secret_key" not in key.to_json()
        # Messages carry ids only: the outbox has no column for anything else (a relay's reservation is
        # its id and a time).
        assert s.scalars(select(Outbox)).all()
        assert {c.key for c in Outbox.__table__.columns} == {
            "id",
            "operation",
            "job_id",
            "task_id",
            "created_at",
            "available_at",
            "sent_at",
            "reserved_until",
            "reserved_by",
        }
    ds = _ok(client.get(f"/api/decryption/status?election_id={eid}", headers=admin))
    assert ds["quorum"] == 2 and ds["guardiansDecrypted"] == 0 and not ds["quorumMet"]
    assert [len(g["compensatedDecryptions"]) for g in ds["guardians"]] == [1, 1, 0]

    # 4. Combine: refused until the shares exist, then created with one task per decryption unit.
    before = row_counts(engine)
    assert client.post("/api/combine/decryption", json={"election_id": eid}, headers=admin).status_code == 409
    assert row_counts(engine) == before
    with transaction(engine) as s:
        ids = [
            c.id
            for c in s.scalars(
                select(ElectionCenter).where(
                    ElectionCenter.election_id == eid, ElectionCenter.kind.in_(["slice", "spoiled"])
                )
            )
        ]
        for job_id, g, missing in [
            (d1["jobId"], "g1", None),
            (d2["jobId"], "g2", None),
            (d1["compensatedJobs"][0]["jobId"], "g1", "g3"),
            (d2c["compensatedJobs"][0]["jobId"], "g2", "g3"),
        ]:
            for cid in ids:
                if missing:
                    s.add(
                        CompensatedShare(
                            chunk_id=cid, guardian_id=g, missing_guardian_id=missing, job_id=job_id, share={}
                        )
                    )
                else:
                    s.add(DecryptionShare(chunk_id=cid, guardian_id=g, job_id=job_id, share={}))
            s.execute(update(ElectionJob).where(ElectionJob.job_id == job_id).values(status="COMPLETED"))
    c = _ok(client.post("/api/combine/decryption", json={"election_id": eid}, headers=admin))
    assert c["totalChunks"] == 2
    assert _ok(client.get(c["pollUrl"], headers=admin))["metadata"]["missing_guardian_ids"] == ["g3"]
    jobs = _ok(client.get(f"/api/jobs?election_id={eid}", headers=admin))
    assert sorted(j["operationType"] for j in jobs) == sorted(
        [
            "TALLY",
            "PARTIAL_DECRYPTION",
            "PARTIAL_DECRYPTION",
            "COMPENSATED_DECRYPTION",
            "COMPENSATED_DECRYPTION",
            "COMBINE_DECRYPTION",
        ]
    )
    # A guardian sees its own jobs only; another's job is "not found".
    g1 = {"Authorization": f"Bearer {flow['guardians']['g1']['token']}"}
    mine = _ok(client.get(f"/api/jobs?election_id={eid}", headers=g1))
    assert {j["guardianId"] for j in mine} == {"g1"} and len(mine) == 2
    assert client.get(f"/api/jobs/{d2['jobId']}/status", headers=g1).status_code == 404
    assert client.get(f"/api/jobs/{t['jobId']}/status", headers=g1).status_code == 404
    # Results are not there before the combine completes.
    assert client.get(f"/api/elections/{eid}/results", headers=admin).status_code == 409


def test_redrive_calls_the_bridge_transition(
    flow: dict[str, Any], client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    e = _new_election(client, admin, n=1, k=1)
    eid = e["election_id"]
    _ok(client.post(f"/api/elections/{eid}/open", headers=admin))
    _ok(
        client.post(f"/api/elections/{eid}/ballots", json={"ballot": _encrypted(e, "x", 0)}, headers=admin),
        201,
    )
    _ok(client.post(f"/api/elections/{eid}/close", headers=admin))
    t = _ok(client.post("/api/tally/create", json={"election_id": eid}, headers=admin))
    assert client.post(f"/api/jobs/{t['jobId']}/redrive", headers=admin).status_code == 409
    with transaction(engine) as s:
        s.execute(
            update(ChunkTask)
            .where(ChunkTask.job_id == t["jobId"])
            .values(state="FAILED", attempts=3, last_error="boom")
        )
        s.execute(
            update(ElectionJob)
            .where(ElectionJob.job_id == t["jobId"])
            .values(status="FAILED", failed_chunks=1)
        )
    st = _ok(client.get(t["pollUrl"], headers=admin))
    assert st["failedChunkErrors"][0]["error"] == "boom" and st["failedChunkErrors"][0]["chunkNumber"] == 1
    r = _ok(client.post(f"/api/jobs/{t['jobId']}/redrive", headers=admin))
    assert r["redriven"] == 1 and r["status"] == "IN_PROGRESS"
    assert _ok(client.get(t["pollUrl"], headers=admin))["failedChunks"] == 0


# ------------------------------------------------------------------------------------------ refusals


def _refused(
    client: TestClient, engine: Engine, method: str, url: str, code: int, match: str = "", **kw: Any
) -> str:
    before = row_counts(engine)
    r = client.request(method, url, **kw)
    assert r.status_code == code, r.text
    assert row_counts(engine) == before
    detail = (
        json.dumps(r.json()["detail"])
        if r.headers.get("content-type", "").startswith("application/json")
        else r.text
    )
    assert match in detail, detail
    return detail


@pytest.fixture(scope="module")
def open_election(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    e = _new_election(client, admin, name="Council")
    _ok(client.post(f"/api/elections/{e['election_id']}/open", headers=admin))
    _ok(
        client.post(
            f"/api/elections/{e['election_id']}/ballots",
            json={"ballot": _encrypted(e, "first", 0)},
            headers=admin,
        ),
        201,
    )
    return e


def test_ballot_refusals(
    client: TestClient,
    admin: dict[str, str],
    engine: Engine,
    open_election: dict[str, Any],
    flow: dict[str, Any],
) -> None:
    eid = open_election["election_id"]
    url = f"/api/elections/{eid}/ballots"
    good = _encrypted(open_election, "second", 1)
    _refused(
        client,
        engine,
        "POST",
        "/api/elections/999999/ballots",
        404,
        "does not exist",
        json={"ballot": good},
        headers=admin,
    )
    _refused(
        client,
        engine,
        "POST",
        url,
        409,
        "already submitted",
        json={"ballot": _encrypted(open_election, "first", 1)},
        headers=admin,
    )
    # A ballot made for another election (another manifest hash).
    other = _encrypted(flow, "stranger", 0)
    _refused(client, engine, "POST", url, 422, "another election", json={"ballot": other}, headers=admin)
    # Same manifest, other keys (the redrive test's election is also "Board"): its proofs fail.
    twin = _new_election(client, admin, n=1, k=1, name="Council")
    _ok(client.post(f"/api/elections/{twin['election_id']}/open", headers=admin))
    _refused(
        client, engine, "POST", url, 422, "proof", json={"ballot": _encrypted(twin, "twin", 0)}, headers=admin
    )
    # A tampered ciphertext fails its proof: the reason names the ballot.
    bad = copy.deepcopy(good)
    sel = bad["contests"][0]["ballot_selections"][0]
    sel["ciphertext"]["pad"], bad["contests"][0]["ballot_selections"][1]["ciphertext"]["pad"] = (
        bad["contests"][0]["ballot_selections"][1]["ciphertext"]["pad"],
        sel["ciphertext"]["pad"],
    )
    _refused(client, engine, "POST", url, 422, "ballot second", json={"ballot": bad}, headers=admin)
    _refused(
        client, engine, "POST", url, 422, "malformed", json={"ballot": {"object_id": "x"}}, headers=admin
    )
    _refused(
        client,
        engine,
        "POST",
        url,
        422,
        "",
        content=b"{not json",
        headers={**admin, "Content-Type": "application/json"},
    )
    _refused(client, engine, "POST", url, 422, "", json={"ballot": good, "action": "shred"}, headers=admin)
    # Bulk is all or nothing: one bad ballot refuses the lot and is named.
    bulk = [{"ballot": good}, {"ballot": bad}]
    _refused(client, engine, "POST", url + "/bulk", 422, "none stored", json={"ballots": bulk}, headers=admin)
    _refused(
        client,
        engine,
        "POST",
        url + "/bulk",
        422,
        "repeated",
        json={"ballots": [{"ballot": good}] * 2},
        headers=admin,
    )
    # Plaintext ballots: overvote and unknown selection are refused before encryption.
    over = _plaintext(open_election, "p1", 0)
    over["contests"][0]["ballot_selections"][1]["vote"] = 1
    _refused(
        client,
        engine,
        "POST",
        url + "/encrypt",
        422,
        "2 votes, 1 allowed",
        json={"ballot": over},
        headers=admin,
    )
    # Closed election: no ballots.
    _refused(
        client,
        engine,
        "POST",
        f"/api/elections/{flow['election_id']}/ballots",
        409,
        "closed",
        json={"ballot": good},
        headers=admin,
    )
    # And the good one is still accepted afterwards.
    _ok(client.post(url, json={"ballot": good}, headers=admin), 201)


def test_election_and_tally_refusals(
    client: TestClient, admin: dict[str, str], engine: Engine, open_election: dict[str, Any]
) -> None:
    eid = open_election["election_id"]
    _refused(
        client,
        engine,
        "POST",
        "/api/tally/create",
        404,
        "does not exist",
        json={"election_id": 999999},
        headers=admin,
    )
    _refused(
        client,
        engine,
        "POST",
        "/api/tally/create",
        409,
        "only a closed election",
        json={"election_id": eid},
        headers=admin,
    )
    _refused(
        client,
        engine,
        "POST",
        "/api/tally/create",
        422,
        "",
        json={"election_id": eid, "chunk_size": 0},
        headers=admin,
    )
    _refused(
        client, engine, "POST", f"/api/elections/{eid}/open", 409, "only an election in setup", headers=admin
    )
    _refused(
        client,
        engine,
        "POST",
        f"/api/elections/{eid}/key-ceremony",
        409,
        "already run",
        json={"guardian_ids": ["a"]},
        headers=admin,
    )
    body = {"name": "x", "number_of_guardians": 3, "quorum": 4, "candidate_names": ["a"]}
    _refused(client, engine, "POST", "/api/elections", 422, "quorum", json=body, headers=admin)
    body = {"name": "x", "number_of_guardians": 3, "quorum": 2}
    _refused(
        client,
        engine,
        "POST",
        "/api/elections",
        422,
        "either a manifest or candidate_names",
        json=body,
        headers=admin,
    )
    body = {"name": "x", "number_of_guardians": 3, "quorum": 2, "manifest": {"contests": "nope"}}
    _refused(client, engine, "POST", "/api/elections", 422, "manifest", json=body, headers=admin)
    e = _ok(
        client.post(
            "/api/elections",
            json={"name": "y", "number_of_guardians": 2, "quorum": 1, "candidate_names": ["a", "b"]},
            headers=admin,
        ),
        201,
    )
    _refused(
        client, engine, "POST", f"/api/elections/{e['election_id']}/open", 409, "no keys yet", headers=admin
    )
    # Passphrases are no longer the ceremony's: a body carrying them is refused, pointing to the claim.
    old_body = {
        "guardians": [
            {"guardian_id": "a", "passphrase": "long enough"},
            {"guardian_id": "b", "passphrase": "long enough"},
        ]
    }
    detail = _refused(
        client,
        engine,
        "POST",
        f"/api/elections/{e['election_id']}/key-ceremony",
        422,
        "/claim",
        json=old_body,
        headers=admin,
    )
    assert "long enough" not in detail
    _refused(
        client,
        engine,
        "POST",
        f"/api/elections/{e['election_id']}/key-ceremony",
        422,
        "2 guardians",
        json={"guardian_ids": ["a"]},
        headers=admin,
    )
    _refused(
        client,
        engine,
        "POST",
        f"/api/elections/{e['election_id']}/key-ceremony",
        422,
        "twice",
        json={"guardian_ids": ["a", "a"]},
        headers=admin,
    )


def test_credential_refusals(
    client: TestClient,
    admin: dict[str, str],
    engine: Engine,
    flow: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Runs after the flow test made g1 and g2's jobs: use g3 (which has none)."""
    caplog.set_level(logging.DEBUG)
    eid = flow["election_id"]
    g3 = flow["guardians"]["g3"]
    auth = {"Authorization": f"Bearer {g3['token']}"}
    base = {
        "election_id": eid,
        "guardian_id": "g3",
        "credentials": g3["credentials"],
        "passphrase": PASS["g3"],
    }
    url = "/api/decryption/create"
    detail = _refused(
        client,
        engine,
        "POST",
        url,
        403,
        "wrong passphrase",
        json={**base, "passphrase": "not the passphrase"},
        headers=auth,
    )
    assert "not the passphrase" not in detail and PASS["g3"] not in detail
    _refused(
        client,
        engine,
        "POST",
        url,
        422,
        "is for guardian 'g1'",
        json={**base, "credentials": flow["guardians"]["g1"]["credentials"]},
        headers=auth,
    )
    tampered = copy.deepcopy(g3["credentials"])
    tampered["owner"]["manifest_hash"] = "00"  # the header is authenticated with the ciphertext
    _refused(
        client,
        engine,
        "POST",
        url,
        403,
        "wrong passphrase",
        json={**base, "credentials": tampered},
        headers=auth,
    )
    ct = copy.deepcopy(g3["credentials"])
    ct["ciphertext"] = ct["ciphertext"][:-8] + "AAAAAAA="
    _refused(client, engine, "POST", url, 403, "damaged", json={**base, "credentials": ct}, headers=auth)
    _refused(
        client,
        engine,
        "POST",
        url,
        422,
        "not valid JSON",
        json={**base, "credentials": "{oops"},
        headers=auth,
    )
    _refused(
        client,
        engine,
        "POST",
        url,
        422,
        "not an amarvote credential",
        json={**base, "credentials": {"a": 1}},
        headers=auth,
    )
    _refused(
        client, engine, "POST", url, 404, "not a guardian", json={**base, "guardian_id": "g9"}, headers=admin
    )
    _refused(
        client,
        engine,
        "POST",
        url,
        404,
        "missing guardian 'g7'",
        json={**base, "missing_guardian_ids": ["g7"]},
        headers=auth,
    )
    _refused(
        client,
        engine,
        "POST",
        url,
        422,
        "itself",
        json={**base, "missing_guardian_ids": ["g3"]},
        headers=auth,
    )
    # A guardian acts only as itself.
    _refused(
        client,
        engine,
        "POST",
        url,
        403,
        "only as guardian 'g3'",
        json={**base, "guardian_id": "g2"},
        headers=auth,
    )
    # Validation errors never echo the request (a passphrase must not come back).
    detail = _refused(client, engine, "POST", url, 422, "", json={**base, "surprise": 1}, headers=auth)
    assert PASS["g3"] not in detail and "ciphertext" not in detail
    # Nothing secret reached a log either (every logger at DEBUG, SQLAlchemy's included).
    assert PASS["g3"] not in caplog.text and "not the passphrase" not in caplog.text
    assert g3["credentials"]["ciphertext"] not in caplog.text


def test_auth_and_rate_limit(client: TestClient, engine: Engine, settings: Settings, db_url: str) -> None:
    _refused(client, engine, "GET", "/api/elections", 401, "bearer token")
    _refused(
        client,
        engine,
        "GET",
        "/api/elections",
        401,
        "invalid token",
        headers={"Authorization": "Bearer abc.def.ghi"},
    )
    forged = issue_token(
        settings.model_copy(update={"jwt_secret": SecretStr("another-secret-entirely-xxxxxxxx")}),
        "x",
        "admin",
    )
    _refused(
        client,
        engine,
        "GET",
        "/api/elections",
        401,
        "Signature",
        headers={"Authorization": f"Bearer {forged}"},
    )
    guardian = issue_token(settings, "g", "guardian", election_id=1, guardian_id="g1")
    _refused(
        client,
        engine,
        "POST",
        "/api/tally/create",
        403,
        "admin",
        json={"election_id": 1},
        headers={"Authorization": f"Bearer {guardian}"},
    )
    limited = settings.model_copy(update={"job_rate_limit_per_minute": 2})
    with TestClient(create_app(limited)) as c:
        h = {"Authorization": f"Bearer {issue_token(limited, 'busy', 'admin')}"}
        for _ in range(2):
            assert c.post("/api/tally/create", json={"election_id": 999999}, headers=h).status_code == 404
        _refused(
            c,
            engine,
            "POST",
            "/api/tally/create",
            429,
            "job creations a minute",
            json={"election_id": 999999},
            headers=h,
        )


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok", "database": "postgresql"}
    text = client.get("/metrics").text
    assert "amarvote_http_requests_total" in text and "amarvote_jobs_created_total" in text
    assert client.get("/openapi.json").status_code == 200


def test_reference_manifest_and_versioned_replacement(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    from compute.manifest import build_simple_manifest

    m1 = build_simple_manifest(["x", "y"], election_name="Ref one").to_json()
    m2 = build_simple_manifest(["x", "y", "z"], max_choices=2, election_name="Ref two").to_json()
    e = _ok(
        client.post(
            "/api/elections",
            json={"name": "ref", "number_of_guardians": 1, "quorum": 1, "manifest": m1},
            headers=admin,
        ),
        201,
    )
    eid = e["election_id"]
    assert e["manifest_version"] == 1
    got = _ok(client.get(f"/api/elections/{eid}/manifest", headers=admin))
    assert got["manifest"] == m1  # stored as given
    e2 = _ok(client.put(f"/api/elections/{eid}/manifest", json={"manifest": m2}, headers=admin))
    assert e2["manifest_version"] == 2 and e2["manifest_hash"] != e["manifest_hash"]
    _ok(
        client.post(
            f"/api/elections/{eid}/key-ceremony",
            json={"guardian_ids": ["only"]},
            headers=admin,
        )
    )
    _refused(
        client,
        engine,
        "PUT",
        f"/api/elections/{eid}/manifest",
        409,
        "fixed",
        json={"manifest": m1},
        headers=admin,
    )
    broken = {**m1, "contests": [{**m1["contests"][0], "electoral_district_id": "nowhere"}]}
    _refused(
        client,
        engine,
        "POST",
        "/api/elections",
        422,
        "not valid",
        json={"name": "b", "number_of_guardians": 1, "quorum": 1, "manifest": broken},
        headers=admin,
    )


def test_metrics_count_jobs_by_state_from_the_database(client: TestClient, engine: Engine) -> None:
    from helpers_service import make_election
    from sqlalchemy import func

    from service.jobs import planning

    eid = make_election(engine, ballots=3)
    with transaction(engine) as s:
        planning.create_tally_job(s, eid, 2, "admin")
    with session_factory(engine)() as s:
        expected = {
            (op, st): n
            for op, st, n in s.execute(
                select(ElectionJob.operation_type, ElectionJob.status, func.count()).group_by(
                    ElectionJob.operation_type, ElectionJob.status
                )
            )
        }
    text = client.get("/metrics").text
    for (op, st), n in expected.items():
        assert f'amarvote_jobs{{operation="{op}",status="{st}"}} {float(n)}' in text
