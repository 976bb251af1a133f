"""Guardian-held decryption: shares computed by the guardians on their own machines, uploaded through the
API and checked on Ray (``service/elections/uploads.py``, ``bridge/tasks/share_check.py``).

One election of 5 guardians, quorum 3, tallied through RabbitMQ and Ray (module fixture). The test stands
in for the guardians: it opens the credential files the custodial key ceremony sealed (the guardians' own
private records) and computes shares with ``compute/``; the service never sees a key.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bridge.brokers.rabbitmq import RabbitMQBroker
from bridge.executor import Executor
from compute.context import ElectionContext
from compute.decryption import (
    compute_compensated_decryption_shares,
    compute_decryption_shares,
    compute_lagrange_coefficients,
    reconstruct_decryption_share,
)
from compute.decryption_share import CompensatedDecryptionShare
from compute.decryption_share import DecryptionShare as Share
from compute.decryption_target import Target
from compute.group import to_hex
from compute.guardian import GuardianRecord
from compute.record import open_record
from compute.verify import verify_source
from service.api.app import create_app
from service.db.models import CompensatedShare, DecryptionShare, ShareUpload
from service.elections.crypto import parse_private_record
from service.security.auth import Role, issue_token
from service.security.sealing import open_credential, read_credential
from service.settings import Settings
from tests.bridge.helpers_bridge import job_row, wait_for
from tests.bridge.test_bridge_flow import pipeline
from tests.conftest import TEST_JWT_SECRET
from tests.oracle import require_oracle, run_oracle
from tests.service.helpers_service import custodial_keys

pytestmark = pytest.mark.services
GUARDIANS = ("g1", "g2", "g3", "g4", "g5")
AVAILABLE, MISSING = ("g1", "g2", "g3"), ("g4", "g5")
PASS = {g: f"passphrase of {g} 123" for g in GUARDIANS}
VOTES = ["A", "B", "A", "C", "A", "B", "A", "C", "B", "A"]
SPOILED = {3, 6}


@pytest.fixture()
def api_settings(settings: Settings, tmp_path: Path) -> Settings:
    return Settings(
        database_url=settings.database_url,
        amqp_url=settings.amqp_url,
        server_secret=settings.server_secret,
        max_attempts=3,
        retry_backoff_seconds=0.2,
        lease_seconds=5,
        task_memory_mb=64,
        max_in_flight=4,
        jwt_secret=TEST_JWT_SECRET,
        data_dir=tmp_path,
        kdf_time_cost=1,
        kdf_memory_kib=1024,
        kdf_parallelism=1,
        job_rate_limit_per_minute=0,
        auto_migrate=False,
        spoiled_chunk_size=1,  # two spoiled ballots: two runs, plus the one slice
    )


def _ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, r.text
    return r.json()


class Election:
    """An election of 5 guardians through the API, tallied; the guardians' credentials and tokens."""

    def __init__(self, client: TestClient, settings: Settings, factory: Any) -> None:
        self.client, self.factory = client, factory
        self.admin = {"Authorization": f"Bearer {issue_token(settings, 'admin', Role.ADMIN)}"}
        e = _ok(
            client.post(
                "/api/elections",
                json={
                    "name": "held",
                    "number_of_guardians": 5,
                    "quorum": 3,
                    "candidate_names": ["A", "B", "C"],
                },
                headers=self.admin,
            ),
            201,
        )
        self.id = e["election_id"]
        kc = custodial_keys(client, self.admin, self.id, {g: PASS[g] for g in GUARDIANS})
        self.creds = {g["guardian_id"]: g["credentials"] for g in kc["guardians"]}
        self.tokens = {g["guardian_id"]: {"Authorization": f"Bearer {g['token']}"} for g in kc["guardians"]}
        _ok(client.post(f"/api/elections/{self.id}/open", headers=self.admin))
        for i, v in enumerate(VOTES):
            ballot = {
                "object_id": f"b{i}",
                "style_id": "ballot-style-1",
                "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": v, "vote": 1}]}],
            }
            body = {"ballot": ballot, "action": "spoil" if i in SPOILED else "cast"}
            _ok(client.post(f"/api/elections/{self.id}/ballots/encrypt", json=body, headers=self.admin), 201)
        _ok(client.post(f"/api/elections/{self.id}/close", headers=self.admin))
        t = _ok(
            client.post(
                "/api/tally/create", json={"election_id": self.id, "chunk_size": 4}, headers=self.admin
            )
        )
        self.tally_job = t["jobId"]

    def get(self, path: str, who: str = "admin", **params: Any) -> Any:
        headers = self.admin if who == "admin" else self.tokens[who]
        return _ok(self.client.get(f"/api/elections/{self.id}{path}", params=params, headers=headers))

    # -- the guardian's side ------------------------------------------------------------------------
    def private(self, g: str) -> Any:
        """What only guardian ``g`` holds: its private record, from its own credential file."""
        plain = open_credential(read_credential(self.creds[g]), PASS[g])
        return parse_private_record(json.loads(plain), g)

    def context(self) -> ElectionContext:
        return ElectionContext.from_json(self.get("/context"))

    def records(self) -> dict[str, GuardianRecord]:
        return {r["guardian_id"]: GuardianRecord.from_json(r) for r in self.get("/guardians")}

    def unit_documents(self, g: str) -> dict[int, dict[str, Any]]:
        """Guardian ``g``'s upload of every unit, computed here: {unit id: {share, compensated}}."""
        private, context, records = self.private(g), self.context(), self.records()
        units = self.get("/decryption-units", g)
        out = {}
        for u in units["units"]:
            detail = self.get(f"/decryption-units/{u['unit_id']}", g)
            targets = [Target.from_json(t) for t in detail["targets"]]
            own = compute_decryption_shares(private, targets, context, workers=1)
            comp = {
                m: compute_compensated_decryption_shares(private, records[m], targets, context, workers=1)
                for m in units["missing_guardian_ids"]
            }
            out[u["unit_id"]] = {
                "kind": u["kind"],
                "share": _document(u["kind"], targets, own),
                "compensated": {m: _document(u["kind"], targets, s) for m, s in comp.items()},
            }
        return out

    def put(self, g: str, unit_id: int, body: dict[str, Any], who: str | None = None) -> Any:
        return self.client.put(
            f"/api/elections/{self.id}/guardians/{g}/shares/{unit_id}",
            json={"share": body["share"], "compensated": body["compensated"]},
            headers=self.tokens[who or g],
        )

    def submit(self, g: str) -> Any:
        return self.client.post(
            f"/api/elections/{self.id}/guardians/{g}/shares/submit", json={}, headers=self.tokens[g]
        )


def _document(kind: str, targets: list[Target], shares: list[Any]) -> dict[str, Any]:
    if kind == "slice":
        return shares[0].to_json()
    return {"spoiled_ballots": {t.object_id: s.to_json() for t, s in zip(targets, shares, strict=True)}}


@pytest.fixture()
def election(api_settings: Settings, factory: Any, ray_local: None, clean: None) -> Iterator[Election]:
    real = Executor(
        factory, RabbitMQBroker(api_settings.amqp_url), api_settings, shutdown_grace=10
    )  # real bodies
    with TestClient(create_app(api_settings)) as client, pipeline(api_settings, factory, bridge=real):
        e = Election(client, api_settings, factory)
        wait_for(lambda: job_row(factory, e.tally_job).status == "COMPLETED", timeout=120)
        yield e


def _jobs_end(e: Election, job_ids: list[str], timeout: float = 180) -> list[dict[str, Any]]:
    import uuid

    wait_for(
        lambda: all(job_row(e.factory, uuid.UUID(j)).status in ("COMPLETED", "FAILED") for j in job_ids),
        timeout=timeout,
    )
    return [_ok(e.client.get(f"/api/jobs/{j}/status", headers=e.admin)) for j in job_ids]


def _count(factory: Any, model: Any, **where: Any) -> int:
    with factory() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.scalar(stmt) or 0)


def test_cast_ciphertexts_page_through_every_cast_ballot_once(election: Election) -> None:
    e = election
    seen: list[str] = []
    after, pages = 0, 0
    while True:
        page = e.get("/cast-ciphertexts", "g1", after=after, limit=3)
        pages += 1
        seen += [b["object_id"] for b in page["ballots"]]
        seqs = [b["seq"] for b in page["ballots"]]
        assert seqs == sorted(seqs) and all(s > after for s in seqs)
        for b in page["ballots"]:
            ballot = e.get(f"/ballots/{b['object_id']}")
            expected = [
                [c["object_id"], s["object_id"], s["ciphertext"]["pad"], s["ciphertext"]["data"]]
                for c in ballot["contests"]
                for s in c["ballot_selections"]
            ]
            got = []
            for cid, sid, packed, _placeholder in b["selections"]:
                raw = base64.b64decode(packed)
                assert len(raw) == 1024
                pad, data = int.from_bytes(raw[:512], "big"), int.from_bytes(raw[512:], "big")
                got.append([cid, sid, to_hex(pad), to_hex(data)])
            assert got == expected
        if page["next_after"] is None:
            break
        after = page["next_after"]
    cast = [f"b{i}" for i in range(len(VOTES)) if i not in SPOILED]
    assert sorted(seen) == sorted(cast) and len(seen) == len(set(seen)) and pages == 3
    spoiled = e.get("/spoiled-ballots", "g2")
    assert [b["object_id"] for b in spoiled["ballots"]] == [f"b{i}" for i in sorted(SPOILED)]
    assert spoiled["next_after"] is None
    assert e.get("/encrypted-tally", "g3")["object_id"] == "election-results"


def test_missing_guardians_and_wrong_units_are_refused(election: Election) -> None:
    e = election
    too_many = e.client.post(
        f"/api/elections/{e.id}/missing-guardians", json={"guardian_ids": ["g3", "g4", "g5"]}, headers=e.admin
    )
    assert too_many.status_code == 409 and "at most 2" in too_many.json()["detail"]
    assert e.get("/missing-guardians", "g1") == {"election_id": e.id, "declared": False, "guardian_ids": []}
    declared = _ok(
        e.client.post(
            f"/api/elections/{e.id}/missing-guardians", json={"guardian_ids": list(MISSING)}, headers=e.admin
        )
    )
    assert declared["guardian_ids"] == list(MISSING)
    docs = e.unit_documents("g1")
    (slice_id,) = [u for u, d in docs.items() if d["kind"] == "slice"]
    spoiled_ids = [u for u, d in docs.items() if d["kind"] == "spoiled"]

    # A declared-missing guardian turning up: 409 naming it, at upload and at a custodial decryption.
    r = e.put("g4", slice_id, docs[slice_id])
    assert r.status_code == 409 and "'g4'" in r.json()["detail"] and "missing" in r.json()["detail"]
    custodial = e.client.post(
        "/api/decryption/create",
        json={
            "election_id": e.id,
            "guardian_id": "g4",
            "credentials": e.creds["g4"],
            "passphrase": PASS["g4"],
        },
        headers=e.tokens["g4"],
    )
    assert custodial.status_code == 409 and "'g4'" in custodial.json()["detail"]

    # A share of another unit (a spoiled run's document for the slice; one run's for the other run).
    r = e.put("g1", slice_id, docs[spoiled_ids[0]])
    assert r.status_code == 422, r.text
    r = e.put("g1", spoiled_ids[0], docs[spoiled_ids[1]])
    assert r.status_code == 422 and "ballots not in the unit" in r.json()["detail"]
    # A selection the unit does not hold.
    bad = json.loads(json.dumps(docs[slice_id]))
    sels = bad["share"]["contests"]["contest-1"]["selections"]
    sels["D"] = {**sels["A"], "object_id": "D"}
    r = e.put("g1", slice_id, bad)
    assert r.status_code == 422 and "selections not in the unit: ['D']" in r.json()["detail"]
    # Compensated shares for a guardian that is not the declared missing one.
    r = e.put(
        "g1",
        slice_id,
        {"share": docs[slice_id]["share"], "compensated": {"g4": docs[slice_id]["compensated"]["g4"]}},
    )
    assert r.status_code == 422 and "declared missing" in r.json()["detail"]
    # Another guardian's token cannot upload for g1.
    assert e.put("g1", slice_id, docs[slice_id], who="g2").status_code == 403
    assert _count(e.factory, ShareUpload) == 0  # every refusal staged nothing
    # A submit before every unit is uploaded names what is lacking.
    _ok(e.put("g1", slice_id, docs[slice_id]))
    r = e.submit("g1")
    assert r.status_code == 422 and "has not uploaded every unit" in r.json()["detail"]
    # Shares exist now: the declaration can no longer change.
    r = e.client.post(
        f"/api/elections/{e.id}/missing-guardians", json={"guardian_ids": ["g5"]}, headers=e.admin
    )
    assert r.status_code == 409 and "shares were uploaded" in r.json()["detail"]


def test_uploaded_shares_decrypt_verify_and_a_bad_proof_fails_until_uploaded_again(
    election: Election, tmp_path: Path
) -> None:
    e = election
    _ok(
        e.client.post(
            f"/api/elections/{e.id}/missing-guardians", json={"guardian_ids": list(MISSING)}, headers=e.admin
        )
    )
    docs = {g: e.unit_documents(g) for g in AVAILABLE}
    (slice_id,) = [u for u, d in docs["g1"].items() if d["kind"] == "slice"]

    # g2's own share of the slice with one response tampered: accepted at upload (its structure is
    # right), refused by its task at the first attempt, naming guardian, unit, contest and selection.
    tampered = json.loads(json.dumps(docs["g2"][slice_id]))
    proof = tampered["share"]["contests"]["contest-1"]["selections"]["B"]["proof"]
    proof["response"] = to_hex(int(proof["response"], 16) + 1)
    jobs: dict[str, list[str]] = {}
    for g in AVAILABLE:
        for unit_id, body in docs[g].items():
            staged = _ok(e.put(g, unit_id, tampered if (g, unit_id) == ("g2", slice_id) else body))
            assert staged["staged"] == ["share", *MISSING]
        out = _ok(e.submit(g))
        assert out["totalChunks"] == 3 and [j["missingGuardianId"] for j in out["compensatedJobs"]] == list(
            MISSING
        )
        jobs[g] = [out["jobId"], *(j["jobId"] for j in out["compensatedJobs"])]
    assert e.submit("g1").status_code == 409  # once

    statuses = _jobs_end(e, [j for js in jobs.values() for j in js])
    by_id = {s["jobId"]: s for s in statuses}
    bad = by_id[jobs["g2"][0]]
    assert bad["status"] == "FAILED", bad
    error = bad["errorMessage"]
    assert "guardian g2" in error and f"slice 1 (unit {slice_id})" in error and "selection B" in error, error
    assert "contest-1" in error and bad["metadata"]["shares"] == "uploaded"
    (chunk,) = bad["failedChunkErrors"]
    assert chunk["error"].startswith("ShareRejected: ") and chunk["attempts"] == 1  # permanent: no retry
    assert all(s["status"] == "COMPLETED" for j, s in by_id.items() if j != jobs["g2"][0]), statuses
    assert _count(e.factory, DecryptionShare, chunk_id=slice_id, guardian_id="g2") == 0
    assert _count(e.factory, ShareUpload, guardian_id="g2", chunk_id=slice_id, missing_guardian_id="") == 1
    r = e.client.post("/api/combine/decryption", json={"election_id": e.id}, headers=e.admin)
    assert r.status_code == 409  # g2 has not decrypted the whole tally: no quorum of complete guardians

    # The correct share uploaded again: its task is re-driven and reads the new document.
    again = _ok(e.put("g2", slice_id, docs["g2"][slice_id]))
    assert again["staged"] == ["share"] and again["alreadyAccepted"] == list(MISSING)
    assert again["redrivenJobs"] == [jobs["g2"][0]]
    assert _jobs_end(e, [jobs["g2"][0]])[0]["status"] == "COMPLETED"
    assert _count(e.factory, ShareUpload) == 0  # every staged document erased with its DONE
    assert _count(e.factory, DecryptionShare) == 3 * 3 and _count(e.factory, CompensatedShare) == 3 * 3 * 2

    c = _ok(e.client.post("/api/combine/decryption", json={"election_id": e.id}, headers=e.admin))
    assert _jobs_end(e, [c["jobId"]])[0]["status"] == "COMPLETED"
    res = e.get("/results")
    counts = {sel["selection_id"]: sel["votes"] for sel in res["contests"][0]["selections"]}
    cast = Counter(v for i, v in enumerate(VOTES) if i not in SPOILED)
    assert counts == {c: cast.get(c, 0) for c in "ABC"}
    for i in SPOILED:
        assert res["spoiled_ballots"][f"b{i}"]["contest-1"] == {c: int(c == VOTES[i]) for c in "ABC"}

    # The exported record verifies with our verifier ...
    r = e.client.get(f"/api/elections/{e.id}/record", headers=e.admin)
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    record_dir = tmp_path / "election_record"
    with open_record(record_dir) as source:
        outcome = verify_source(source)
    assert outcome.problems == [] and outcome.cast == len(VOTES) - len(SPOILED), outcome.problems

    # ... and the reference checks and combines the uploaded shares (the missing guardians' reconstructed
    # from the uploaded compensated shares) of our record's tally and spoiled ballots.
    require_oracle()
    records = e.records()
    lagrange = compute_lagrange_coefficients((g, records[g].sequence_order) for g in AVAILABLE)
    with e.factory() as s:
        direct = {(r.chunk_id, r.guardian_id): r.share for r in s.scalars(select(DecryptionShare))}
        comp = {
            (r.chunk_id, r.guardian_id, r.missing_guardian_id): r.share
            for r in s.scalars(select(CompensatedShare))
        }
    aggregate = json.loads((record_dir / "encrypted_tally.json").read_text())
    from compute.tally import CiphertextTally

    tally = CiphertextTally.from_json(aggregate)

    def shares_of(chunk: int, target: Any, pick: Any) -> dict[str, Any]:
        out = {g: pick(direct[(chunk, g)]) for g in AVAILABLE}
        for m in MISSING:
            parts = {g: CompensatedDecryptionShare.from_json(pick(comp[(chunk, g, m)])) for g in AVAILABLE}
            out[m] = reconstruct_decryption_share(records[m], target, parts, lagrange).to_json()
        return out

    data: dict[str, Any] = {"tally": shares_of(slice_id, tally, lambda d: d), "ballots": {}}
    from compute.ballot import SubmittedBallot

    for unit_id, body in docs["g1"].items():
        if body["kind"] != "spoiled":
            continue
        for bid in body["share"]["spoiled_ballots"]:
            ballot = SubmittedBallot.from_json(
                json.loads((record_dir / "submitted_ballots" / f"submitted_ballot_{bid}.json").read_text())
            )
            data["ballots"][bid] = shares_of(unit_id, ballot, lambda d, bid=bid: d["spoiled_ballots"][bid])
    assert all(Share.from_json(s).guardian_id == g for g, s in data["tally"].items())
    (tmp_path / "shares.json").write_text(json.dumps(data))
    out = run_oracle("decrypt_with_our_shares.py", record_dir, tmp_path / "shares.json")
    assert out["tally_invalid"] == [] and out["tally"] == {"contest-1": {c: cast.get(c, 0) for c in "ABC"}}
    for i in SPOILED:
        assert out["ballots_invalid"][f"b{i}"] == []
        assert out["ballots"][f"b{i}"] == {"contest-1": {c: int(c == VOTES[i]) for c in "ABC"}}
