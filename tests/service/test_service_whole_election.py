"""The whole election through the API, with the bridge's executor over the outbox broker running the
jobs on a local Ray against the real PostgreSQL: keys, cast and spoiled ballots, a tally in chunks of ONE
ballot, 2-of-3 decryption with one guardian missing (compensated), combine, results, and the exported
record verified.

Ballot secrecy is checked where it is lost: with chunks of one ballot, decrypting a chunk's sub-tally
would decrypt that voter's ballot. So every plaintext anywhere (every table, every API response, every
file of the record) must be the decryption of the aggregate or of a spoiled ballot, nothing else, and
the decryption jobs' tasks must follow the aggregate's slices and the spoiled-ballot runs, not the
tally's chunks. Slow-ish (Ray start-up): one test.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers_service import custodial_keys
from sqlalchemy import Engine, select, text

from service.api.app import create_app
from service.db.models import Base, ChunkTask, DecryptionShare, ElectionCenter, ElectionJob
from service.db.session import session_factory
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.conftest import TEST_JWT_SECRET, TEST_SERVER_SECRET

pytestmark = pytest.mark.services
VOTES = ["Ann", "Ben", "Ann", "Cy", "Ann", "Ben", "Cy"]
SPOILED = {3, 5}  # indexes of challenged ballots


@pytest.fixture(scope="module")
def e2e_settings(
    db_url: str, tmp_path_factory: pytest.TempPathFactory, local_ray: None
) -> Iterator[Settings]:
    # Ray workers open the key escrow with the server secret of their own environment: the session's
    # one local Ray (tests/conftest.py) was started with TEST_SERVER_SECRET, so the app uses it too.
    yield Settings(
        database_url=db_url,
        data_dir=tmp_path_factory.mktemp("e2e"),
        server_secret=TEST_SERVER_SECRET,
        jwt_secret=TEST_JWT_SECRET,
        kdf_time_cost=1,
        kdf_memory_kib=1024,
        kdf_parallelism=1,
        job_rate_limit_per_minute=0,
        auto_migrate=False,
        max_in_flight=2,
        task_memory_mb=64,
        decryption_slice_selections=2,  # 3 selections: 2 slices
        spoiled_chunk_size=1,  # 2 spoiled ballots: 2 runs
    )


def _run(settings: Settings) -> None:
    from bridge.brokers.outbox import OutboxBroker
    from bridge.executor import Executor
    from service.db.session import session_factory

    factory = session_factory(settings.sqlalchemy_url)
    Executor(factory, OutboxBroker(factory), settings, poll_interval=0.05).run_until_idle(timeout=300)


def _ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, r.text
    return r.json()


def _plaintext_selections(doc: Any) -> Iterator[dict[str, Any]]:
    """Every decrypted selection (the reference's PlaintextTallySelection JSON) anywhere inside ``doc``."""
    if isinstance(doc, dict):
        if {"tally", "value", "message", "shares"} <= set(doc):
            yield doc
        for v in doc.values():
            yield from _plaintext_selections(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _plaintext_selections(v)
    elif isinstance(doc, str) and doc[:1] in "{[":
        try:
            yield from _plaintext_selections(json.loads(doc))
        except ValueError:
            pass


def _ciphertexts(tally_or_ballot: dict[str, Any]) -> set[tuple[str, str]]:
    out = set()
    for contest in (
        (tally_or_ballot.get("contests") or {}).values()
        if isinstance(tally_or_ballot.get("contests"), dict)
        else tally_or_ballot.get("contests") or []
    ):
        sels = contest.get("selections") or contest.get("ballot_selections") or {}
        for sel in sels.values() if isinstance(sels, dict) else sels:
            ct = sel["ciphertext"]
            out.add((ct["pad"], ct["data"]))
    return out


def _only_allowed_plaintexts(where: str, doc: Any, allowed: set[tuple[str, str]]) -> int:
    n = 0
    for sel in _plaintext_selections(doc):
        message = (sel["message"]["pad"], sel["message"]["data"])
        assert message in allowed, (
            f"{where}: a decryption of something other than the aggregate or a spoiled ballot"
        )
        n += 1
    return n


def _database_plaintexts(engine: Engine, allowed: set[tuple[str, str]]) -> int:
    n = 0
    with engine.connect() as c:
        for name in Base.metadata.tables:
            for row in c.execute(text(f'SELECT * FROM "{name}"')).mappings():
                n += _only_allowed_plaintexts(f"table {name}", dict(row), allowed)
    return n


def test_whole_election_decrypts_only_the_aggregate_and_spoiled_ballots(
    e2e_settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    s = e2e_settings
    admin = {"Authorization": f"Bearer {issue_token(s, 'admin', Role.ADMIN)}"}
    pw = {"a": "passphrase of a", "b": "passphrase of b", "c": "passphrase of c"}
    responses: list[Any] = []

    def ok(r: Any, code: int = 200) -> Any:
        doc = _ok(r, code)
        responses.append(doc)
        return doc

    with TestClient(create_app(s)) as client:
        e = ok(
            client.post(
                "/api/elections",
                json={
                    "name": "E2E",
                    "number_of_guardians": 3,
                    "quorum": 2,
                    "candidate_names": ["Ann", "Ben", "Cy"],
                },
                headers=admin,
            ),
            201,
        )
        eid = e["election_id"]
        kc = custodial_keys(client, admin, eid, pw)
        creds = {g["guardian_id"]: g for g in kc["guardians"]}
        ok(client.post(f"/api/elections/{eid}/open", headers=admin))
        for i, v in enumerate(VOTES):
            ballot = {
                "object_id": f"v{i}",
                "style_id": "ballot-style-1",
                "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": v, "vote": 1}]}],
            }
            action = "spoil" if i in SPOILED else "cast"
            ok(
                client.post(
                    f"/api/elections/{eid}/ballots/encrypt",
                    json={"ballot": ballot, "action": action},
                    headers=admin,
                ),
                201,
            )
        ok(client.post(f"/api/elections/{eid}/close", headers=admin))

        t = ok(client.post("/api/tally/create", json={"election_id": eid, "chunk_size": 1}, headers=admin))
        assert t["totalChunks"] == len(VOTES)
        _run(s)
        assert ok(client.get(t["pollUrl"], headers=admin))["status"] == "COMPLETED"

        for g, missing in (("a", ["c"]), ("b", ["c"])):
            body = {
                "election_id": eid,
                "guardian_id": g,
                "credentials": creds[g]["credentials"],
                "passphrase": pw[g],
                "missing_guardian_ids": missing,
            }
            d = ok(
                client.post(
                    "/api/decryption/create",
                    json=body,
                    headers={"Authorization": f"Bearer {creds[g]['token']}"},
                )
            )
            # 2 slices of the aggregate + 2 runs of spoiled ballots, not 7 chunks (+1).
            assert d["totalChunks"] == 4 and d["compensatedJobs"][0]["totalChunks"] == 4
        _run(s)
        status = ok(client.get(f"/api/decryption/status?election_id={eid}", headers=admin))
        assert status["quorumMet"] and status["guardiansDecrypted"] == 2

        c = ok(client.post("/api/combine/decryption", json={"election_id": eid}, headers=admin))
        assert c["totalChunks"] == 4
        _run(s)
        assert ok(client.get(c["pollUrl"], headers=admin))["status"] == "COMPLETED"
        for j in _ok(client.get(f"/api/jobs?election_id={eid}", headers=admin)):
            responses.append(ok(client.get(f"/api/jobs/{j['jobId']}/status", headers=admin)))

        res = ok(client.get(f"/api/elections/{eid}/results", headers=admin))
        counts = {sel["selection_id"]: sel["votes"] for sel in res["contests"][0]["selections"]}
        cast = [v for i, v in enumerate(VOTES) if i not in SPOILED]
        assert counts == {n: cast.count(n) for n in ("Ann", "Ben", "Cy")}
        assert sorted(res["spoiled_ballots"]) == sorted(f"v{i}" for i in SPOILED)
        for i in SPOILED:
            assert res["spoiled_ballots"][f"v{i}"]["contest-1"] == {n: int(n == VOTES[i]) for n in counts}
        assert "chunks" not in res, "no per-chunk counts"
        # The counts come from beside the decryptions; a unit combined before they were kept there is
        # read whole, to the same answer.
        with session_factory(engine).begin() as db:
            of_this = (ElectionCenter.election_id == eid, ElectionCenter.kind == "spoiled")
            units = db.scalars(select(ElectionCenter).where(*of_this)).all()
            assert units and all("spoiled_counts" in (u.result or {}) for u in units)
            for u in units:
                u.result = {k: v for k, v in (u.result or {}).items() if k != "spoiled_counts"}
        assert ok(client.get(f"/api/elections/{eid}/results", headers=admin)) == res

        r = client.get(f"/api/elections/{eid}/record", headers=admin)
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
        ballots = {
            b["object_id"]: b
            for b in (
                json.loads(p.read_text())
                for p in (tmp_path / "election_record" / "submitted_ballots").iterdir()
            )
        }

    # What may be decrypted: the aggregate's selections and the spoiled ballots' selections. A chunk of one
    # cast ballot has that ballot's ciphertexts as its sub-tally: none of them may appear decrypted.
    aggregate = json.loads((tmp_path / "election_record" / "encrypted_tally.json").read_text())
    allowed = _ciphertexts(aggregate)
    for i in SPOILED:
        allowed |= _ciphertexts(ballots[f"v{i}"])
    cast_cts = set().union(*(_ciphertexts(ballots[f"v{i}"]) for i in range(len(VOTES)) if i not in SPOILED))
    assert not allowed & cast_cts

    n_db = _database_plaintexts(engine, allowed)
    n_api = sum(_only_allowed_plaintexts("an API response", doc, allowed) for doc in responses)
    n_record = sum(
        _only_allowed_plaintexts(f"record file {p.name}", json.loads(p.read_text()), allowed)
        for p in (tmp_path / "election_record").rglob("*.json")
    )
    assert n_db and n_api and n_record, "the scan found the decryptions that must be there"

    with session_factory(engine)() as db:
        jobs = db.scalars(select(ElectionJob).where(ElectionJob.election_id == eid)).all()
        kinds_by_job = {
            j.operation_type: {
                k
                for (k,) in db.execute(
                    select(ElectionCenter.kind)
                    .join(ChunkTask, ChunkTask.chunk_id == ElectionCenter.id)
                    .where(ChunkTask.job_id == j.job_id)
                )
            }
            for j in jobs
        }
        assert kinds_by_job["TALLY"] == {"chunk"}
        for op in ("PARTIAL_DECRYPTION", "COMPENSATED_DECRYPTION", "COMBINE_DECRYPTION"):
            assert kinds_by_job[op] == {"slice", "spoiled"}, op
        share_kinds = set(
            db.scalars(
                select(ElectionCenter.kind).join(
                    DecryptionShare, DecryptionShare.chunk_id == ElectionCenter.id
                )
            )
        )
        assert share_kinds == {"slice", "spoiled"}
        chunk_results = db.scalars(
            select(ElectionCenter.result).where(
                ElectionCenter.election_id == eid, ElectionCenter.kind == "chunk"
            )
        ).all()
        assert chunk_results == [None] * len(VOTES)

    from compute.record import read_record
    from compute.verify import verify_record

    record = read_record(tmp_path / "election_record")
    assert len(record.submitted_ballots) == len(VOTES)
    assert sorted(record.spoiled_ballots) == sorted(f"v{i}" for i in SPOILED)
    assert set(record.lagrange_coefficients) == {"a", "b"}
    assert verify_record(record) == []
