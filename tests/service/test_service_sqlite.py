"""The embedded default (SQLite, migrated at start-up): the same API paths where SQLite differs —
window functions in chunk planning, foreign keys (off by default in SQLite), WAL, the JSON variant,
and naive datetimes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers_service import complete_tally, custodial_keys
from sqlalchemy import select, text

from compute.ballot import BallotBoxState, SubmittedBallot
from service.api.app import create_app
from service.db.models import ChunkTask, ElectionCenter, Outbox
from service.db.session import make_engine, session_factory, transaction
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.compute.ballot_helpers import clone


@pytest.fixture()
def embedded(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, kdf_time_cost=1, kdf_memory_kib=1024, kdf_parallelism=1)


def test_sqlite_pragmas(embedded: Settings) -> None:
    engine = make_engine(embedded.sqlalchemy_url)
    with engine.connect() as c:
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_embedded_flow_on_sqlite(embedded: Settings) -> None:
    with TestClient(create_app(embedded)) as client:  # migrates the new SQLite file itself
        assert client.get("/health").json() == {"status": "ok", "database": "sqlite"}
        # The server secret was generated into the data directory, readable by its owner only.
        secret = Path(embedded.data_dir) / "server_secret.key"
        assert secret.exists() and secret.stat().st_mode & 0o077 == 0
        h = {"Authorization": f"Bearer {issue_token(embedded, 'admin', Role.ADMIN)}"}
        e = client.post(
            "/api/elections",
            json={"name": "Tiny", "number_of_guardians": 1, "quorum": 1, "candidate_names": ["Yes", "No"]},
            headers=h,
        ).json()
        eid = e["election_id"]
        kc = custodial_keys(client, h, eid, {"solo": "only guardian here"})
        assert client.post(f"/api/elections/{eid}/open", headers=h).status_code == 200
        for i in range(5):
            ballot = {
                "object_id": f"b{i}",
                "style_id": "ballot-style-1",
                "contests": [
                    {"object_id": "contest-1", "ballot_selections": [{"object_id": "Yes", "vote": i % 2}]}
                ],
            }
            r = client.post(
                f"/api/elections/{eid}/ballots/encrypt",
                json={"ballot": ballot, "action": "spoil" if i == 4 else "cast"},
                headers=h,
            )
            assert r.status_code == 201, r.text
        again = client.post(
            f"/api/elections/{eid}/ballots/encrypt",
            json={"ballot": {**ballot, "contests": []}},
            headers=h,
        )
        assert again.status_code == 409 and "already submitted" in again.json()["detail"]
        # A clone (b0's ciphertexts under a new id) is refused through the savepoint on SQLite too.
        b0 = client.get(f"/api/elections/{eid}/ballots/b0", headers=h).json()
        copy = clone(SubmittedBallot.from_json({**b0, "state": 1}), "b0-copy").to_json()
        r = client.post(f"/api/elections/{eid}/ballots", json={"ballot": copy}, headers=h)
        assert r.status_code == 409 and "repeats a selection ciphertext of ballot b0" in r.json()["detail"]
        assert client.post(f"/api/elections/{eid}/close", headers=h).status_code == 200
        t = client.post("/api/tally/create", json={"election_id": eid, "chunk_size": 2}, headers=h).json()
        assert t["totalChunks"] == 3

        engine = make_engine(embedded.sqlalchemy_url)
        with session_factory(engine)() as s:
            rows = s.scalars(select(ElectionCenter).order_by(ElectionCenter.chunk_number)).all()
            assert [(r.kind, r.ballot_count) for r in rows] == [
                ("election", 5),
                ("chunk", 2),
                ("chunk", 2),
                ("chunk", 1),
            ]
            assert len(s.scalars(select(ChunkTask)).all()) == 3
            assert all(m.operation == "TALLY" for m in s.scalars(select(Outbox)))
        complete_tally(engine, t["jobId"])
        token = {"Authorization": f"Bearer {kc['guardians'][0]['token']}"}
        d = client.post(
            "/api/decryption/create",
            json={
                "election_id": eid,
                "guardian_id": "solo",
                "credentials": kc["guardians"][0]["credentials"],
                "passphrase": "only guardian here",
            },
            headers=token,
        )
        assert d.status_code == 200, d.text
        assert d.json()["totalChunks"] == 2  # the aggregate's one slice and the one spoiled ballot
        st = client.get(d.json()["pollUrl"], headers=token).json()
        assert st["status"] == "QUEUED" and st["guardianId"] == "solo"
        # Foreign keys are enforced on SQLite too.
        with pytest.raises(Exception, match="FOREIGN KEY"), transaction(engine) as s:
            s.add(ChunkTask(job_id=uuid.UUID(st["jobId"]), chunk_id=10**6, state="PENDING", attempts=0))
        engine.dispose()
    assert BallotBoxState.SPOILED == 2


def test_sqlite_concurrent_tally_creation_makes_one_job(tmp_path: Path) -> None:
    """SQLite has no row locks: BEGIN IMMEDIATE (make_engine) serialises the
    check-then-write, so concurrent requests still make one job and the others get a Conflict."""
    from concurrent.futures import ThreadPoolExecutor

    from service.db import migrate
    from service.db.models import Election
    from service.errors import Conflict
    from service.jobs import planning

    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with transaction(engine) as s:
        e = Election(
            name="c", state="closed", manifest={}, number_of_guardians=1, quorum=1, manifest_version=1
        )
        s.add(e)
        s.flush()
        eid = e.id
        s.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)"
                " INSERT INTO ballot (election_id, object_id, state, code, payload)"
                " SELECT :e, 'b' || i, 1, 'c' || i, x'00' FROM n"
            ),
            {"e": eid},
        )

    def attempt(_: int) -> str:
        try:
            with transaction(engine) as s:
                planning.create_tally_job(s, eid, 10, "x")
            return "created"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(attempt, range(4)))
    assert outcomes == ["conflict"] * 3 + ["created"]
    engine.dispose()
