"""The custodial key ceremony no longer hands the admin anyone's key (issue 18), on PostgreSQL: the admin's
ceremony request carries guardian ids only and its response public data and tokens only; each private
record waits sealed under the server secret (``custodial_claim``) until its guardian claims it, once, with
its own token and passphrase; the claim erases the service's copy, and a later claim is refused naming the
first one's time. The KDF of a claim runs outside any transaction, in a slot of the KDF gate."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers_service import api_settings, complete_tally, row_counts
from sqlalchemy import Engine, select

from compute.polynomial import compute_polynomial_coordinate
from service.api.app import create_app
from service.db.models import CustodialClaim
from service.db.session import transaction
from service.elections import crypto
from service.security import sealing
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.secret_search import dump, leaks

pytestmark = pytest.mark.services

PASS = {"g1": "first guardian's phrase", "g2": "second guardian's phrase", "g3": "third guardian's phrase"}


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(db_url, tmp_path_factory.mktemp("custody"))


def _ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, r.text
    return r.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _election(client: TestClient, admin: dict[str, str], n: int = 3, k: int = 2) -> int:
    body = {"name": "Custody", "number_of_guardians": n, "quorum": k, "candidate_names": ["Yes", "No"]}
    return int(_ok(client.post("/api/elections", json=body, headers=admin), 201)["election_id"])


def _ceremony(client: TestClient, admin: dict[str, str], eid: int, ids: list[str]) -> Any:
    return client.post(f"/api/elections/{eid}/key-ceremony", json={"guardian_ids": ids}, headers=admin)


def _claim(client: TestClient, eid: int, gid: str, headers: dict[str, str], passphrase: str) -> Any:
    return client.post(
        f"/api/elections/{eid}/guardians/{gid}/claim", json={"passphrase": passphrase}, headers=headers
    )


def _private(credentials: dict[str, Any], gid: str, passphrase: str) -> crypto.PrivateGuardianRecord:
    return crypto.parse_private_record(json.loads(sealing.open_with_passphrase(credentials, passphrase)), gid)


def _secrets(privates: list[crypto.PrivateGuardianRecord]) -> list[int]:
    """Every secret of the ceremony: secret keys, every coefficient, every backup coordinate."""
    out = []
    for p in privates:
        keys = p.election_keys
        out.append(int(keys.key_pair.secret_key))
        out += [int(c.value) for c in keys.polynomial.coefficients]
        out += [
            int(compute_polynomial_coordinate(r.election_keys.sequence_order, keys.polynomial))
            for r in privates
        ]
    return out


def _held(engine: Engine, eid: int) -> dict[str, CustodialClaim]:
    with transaction(engine) as s:
        rows = s.scalars(select(CustodialClaim).where(CustodialClaim.election_id == eid)).all()
        s.expunge_all()
        return {r.guardian_id: r for r in rows}


def test_the_admins_ceremony_response_holds_no_credential_file_and_no_secret(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    eid = _election(client, admin)
    r = _ceremony(client, admin, eid, list(PASS))
    kc = _ok(r)
    # Public data and tokens only.
    assert set(kc) == {"election_id", "key_mode", "context", "guardians"}
    assert kc["key_mode"] == "custodial" and kc["context"]["number_of_guardians"] == 3
    for g in kc["guardians"]:
        assert set(g) == {"guardian_id", "sequence_order", "token", "claim_url"}
    for word in ("credentials", "ciphertext", "argon2id", "kdf", "salt", "secret_key", "polynomial"):
        assert word not in r.text, f"the admin's ceremony response holds {word!r}"
    # Every private record waits sealed under the server secret.
    held = _held(engine, eid)
    assert sorted(held) == list(PASS) and all(h.sealed and h.claimed_at is None for h in held.values())

    # The guardians' claims give the secrets to look for: none is in the admin's response.
    privates = []
    for g in kc["guardians"]:
        gid = g["guardian_id"]
        creds = _ok(_claim(client, eid, gid, _bearer(g["token"]), PASS[gid]))["credentials"]
        privates.append(_private(creds, gid, PASS[gid]))
    numbers = _secrets(privates)
    assert len(numbers) == 3 * (1 + 2 + 3)
    assert leaks(r.text, numbers) == []
    # Nor, the claims made, in any row.
    assert leaks(dump(engine), numbers) == []


def test_a_guardian_claims_its_file_once_and_the_service_keeps_no_copy(
    client: TestClient, admin: dict[str, str], engine: Engine, settings: Settings
) -> None:
    eid = _election(client, admin)
    other_eid = _election(client, admin)
    kc = _ok(_ceremony(client, admin, eid, list(PASS)))
    other = _ok(_ceremony(client, admin, other_eid, list(PASS)))
    tokens = {g["guardian_id"]: _bearer(g["token"]) for g in kc["guardians"]}
    g1_blob = bytes(_held(engine, eid)["g1"].sealed or b"")
    assert len(g1_blob) > 100

    # Nobody but g1 itself: not the admin, not another guardian, not g1 of another election.
    before = row_counts(engine)
    for headers, reason in (
        (admin, "not an admin's"),
        (tokens["g2"], "only as guardian 'g2'"),
        (_bearer(other["guardians"][0]["token"]), f"of election {other_eid}"),
    ):
        r = _claim(client, eid, "g1", headers, PASS["g1"])
        assert r.status_code == 403 and reason in r.json()["detail"], r.text
    # A passphrase too short to seal with.
    r = _claim(client, eid, "g1", tokens["g1"], "short")
    assert r.status_code == 422 and "at least 8" in r.json()["detail"] and "short" not in r.json()["detail"]
    assert row_counts(engine) == before and _held(engine, eid)["g1"].sealed == g1_blob

    # g1's claim: its file, sealed under its passphrase, in today's format.
    first = _ok(_claim(client, eid, "g1", tokens["g1"], PASS["g1"]))
    assert first["guardian_id"] == "g1" and first["election_id"] == eid
    creds = first["credentials"]
    assert creds["format"] == sealing.CREDENTIAL_FORMAT and creds["owner"]["guardian_id"] == "g1"
    assert creds["owner"]["election_id"] == eid
    private = _private(creds, "g1", PASS["g1"])
    with pytest.raises(sealing.SealError):
        sealing.open_with_passphrase(creds, PASS["g2"])

    # The service's copy is gone: the row says when, and no row or column holds the sealed record.
    row = _held(engine, eid)["g1"]
    assert row.sealed is None and row.claimed_at is not None
    assert row.claimed_at.isoformat() == first["claimed_at"]
    assert row.claimed_by == f"guardian:{eid}:g1"
    assert g1_blob.hex() not in dump(engine)
    assert leaks(dump(engine), [int(private.election_keys.key_pair.secret_key)]) == []
    # The other guardians' records are still held.
    assert all(_held(engine, eid)[g].sealed for g in ("g2", "g3"))

    # A second claim, even with the right token and passphrase, is refused naming the first one's time.
    before = row_counts(engine)
    again = _claim(client, eid, "g1", tokens["g1"], PASS["g1"])
    assert again.status_code == 410, again.text
    assert first["claimed_at"] in again.json()["detail"] and "claimed at" in again.json()["detail"]
    assert "credentials" not in again.text
    assert row_counts(engine) == before

    # POST /api/decryption/create accepts the claimed file, unchanged.
    _ok(client.post(f"/api/elections/{eid}/open", headers=admin))
    ballot = {
        "object_id": "b0",
        "style_id": "ballot-style-1",
        "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": "Yes", "vote": 1}]}],
    }
    _ok(client.post(f"/api/elections/{eid}/ballots/encrypt", json={"ballot": ballot}, headers=admin), 201)
    _ok(client.post(f"/api/elections/{eid}/close", headers=admin))
    tally = _ok(client.post("/api/tally/create", json={"election_id": eid}, headers=admin))
    complete_tally(engine, tally["jobId"])
    body = {"election_id": eid, "guardian_id": "g1", "credentials": creds, "passphrase": PASS["g1"]}
    started = _ok(client.post("/api/decryption/create", json=body, headers=tokens["g1"]))
    assert started["status"] == "QUEUED"


def test_a_ceremony_body_carrying_passphrases_is_refused_422_pointing_to_the_claim(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    eid = _election(client, admin, n=2, k=1)
    url = f"/api/elections/{eid}/key-ceremony"
    before = row_counts(engine)
    old = {"guardians": [{"guardian_id": g, "passphrase": PASS[g]} for g in ("g1", "g2")]}
    mixed = {"guardian_ids": ["g1", "g2"], "passphrase": PASS["g1"]}
    nested = {"guardian_ids": ["g1", "g2"], "extra": [{"passphrase": PASS["g1"]}]}
    for body in (old, mixed, nested):
        r = client.post(url, json=body, headers=admin)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "never a passphrase" in detail and "/guardians/{guardian_id}/claim" in detail
        assert all(p not in r.text for p in PASS.values())
    assert row_counts(engine) == before
    # A guardian id that merely contains the word is an id like any other.
    _ok(_ceremony(client, admin, eid, ["passphrase-keeper", "g2"]))


def test_no_claim_where_the_service_holds_no_record(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    eid = _election(client, admin, n=1, k=1)
    token = issue_token(settings, "g", Role.GUARDIAN, election_id=eid, guardian_id="solo")
    # Before the ceremony: nothing held.
    r = _claim(client, eid, "solo", _bearer(token), "long enough here")
    assert r.status_code == 404 and "holds no credential file" in r.json()["detail"]
    r = _claim(
        client,
        2**62,
        "solo",
        _bearer(issue_token(settings, "g", "guardian", election_id=2**62, guardian_id="solo")),
        "long enough here",
    )
    assert r.status_code == 404 and "does not exist" in r.json()["detail"]
    # A guardian-held election's guardians hold their own keys: nothing to claim.
    held = _election(client, admin, n=1, k=1)
    start = _ok(
        client.post(f"/api/elections/{held}/ceremony", json={"guardian_ids": ["solo"]}, headers=admin), 201
    )
    r = _claim(client, held, "solo", _bearer(start["guardians"][0]["token"]), "long enough here")
    assert r.status_code == 404, r.text


def _watch_kdf(monkeypatch: pytest.MonkeyPatch, during: Any) -> list[int]:
    import compute.sealing as passphrase_sealing  # where the KDF of a credential file runs

    real = passphrase_sealing.hash_secret_raw
    calls: list[int] = []

    def watched(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        during()
        return real(*args, **kwargs)

    monkeypatch.setattr(passphrase_sealing, "hash_secret_raw", watched)
    return calls


def test_the_claims_kdf_runs_outside_any_transaction_in_a_gate_slot(
    db_url: str, tmp_path: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = api_settings(db_url, tmp_path, kdf_concurrency=1, kdf_wait_seconds=0.2)
    with TestClient(create_app(s)) as client:
        admin = _bearer(issue_token(s, "admin", Role.ADMIN))
        eid = _election(client, admin)
        kc = _ok(_ceremony(client, admin, eid, list(PASS)))
        tokens = {g["guardian_id"]: _bearer(g["token"]) for g in kc["guardians"]}
        api_engine: Engine = client.app.state.ctx.engine  # type: ignore[attr-defined]
        seen: list[int] = []
        calls = _watch_kdf(monkeypatch, lambda: seen.append(api_engine.pool.checkedout()))

        # Every slot busy: 503 with Retry-After, no KDF run, the record still held.
        before = row_counts(engine)
        with client.app.state.ctx.kdf_gate.slot():  # type: ignore[attr-defined]
            r = _claim(client, eid, "g1", tokens["g1"], PASS["g1"])
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert calls == [] and row_counts(engine) == before and _held(engine, eid)["g1"].sealed

        _ok(_claim(client, eid, "g1", tokens["g1"], PASS["g1"]))
        assert calls == [1] and seen == [0], f"connections checked out during the KDF: {seen}"


def test_concurrent_claims_hand_the_file_out_once(
    db_url: str, tmp_path: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four simultaneous claims of one file: all pass the read phase and run the KDF, and the write phase,
    under the row's lock, lets exactly one have the file."""
    s = api_settings(db_url, tmp_path, kdf_concurrency=4, kdf_wait_seconds=30.0)
    with TestClient(create_app(s)) as client:
        admin = _bearer(issue_token(s, "admin", Role.ADMIN))
        eid = _election(client, admin)
        kc = _ok(_ceremony(client, admin, eid, list(PASS)))
        token = _bearer(kc["guardians"][0]["token"])
        calls = _watch_kdf(monkeypatch, lambda: time.sleep(0.5))
        barrier = threading.Barrier(4)

        def claim(_: int) -> Any:
            barrier.wait()
            return _claim(client, eid, "g1", token, PASS["g1"])

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(claim, range(4)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 410, 410, 410], [a.text for a in answers]
    assert len(calls) >= 2, "the claims raced through the KDF to the write phase"
    winner = next(a.json() for a in answers if a.status_code == 200)
    assert all(winner["claimed_at"] in a.json()["detail"] for a in answers if a.status_code == 410)
    assert _held(engine, eid)["g1"].sealed is None


def test_openapi_declares_the_claim(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    claim = paths["/api/elections/{election_id}/guardians/{guardian_id}/claim"]["post"]
    assert {"403", "404", "410", "422", "503"} <= set(claim["responses"])
    schema = client.get("/openapi.json").json()["components"]["schemas"]["KeyCeremony"]
    assert set(schema["properties"]) == {"guardian_ids"}
