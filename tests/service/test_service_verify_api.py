"""``POST /api/verify/create``: 200 (as the other routes that create a job) with the job's id and poll
URL for a decrypted election, 409 before the decryption (and while a verify job of the election runs),
404 for no election, 401 without a valid token, 403 for a guardian of another election; a refusal writes
nothing. (The job itself, run on Ray, is tested in tests/bridge/test_verify_job.py.)"""

from __future__ import annotations

import pytest
from helpers_service import api_settings, complete_tally, make_election, row_counts
from sqlalchemy import Engine, select, update

from service.db.models import ChunkTask, Election, ElectionJob, Outbox
from service.db.session import session_factory, transaction
from service.jobs import planning
from service.security.auth import issue_token
from service.settings import Settings


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(db_url, tmp_path_factory.mktemp("data"))


def _tallied(engine: Engine) -> int:
    """An election whose tally completed (3 chunks), left in state ``tallied``."""
    eid = make_election(engine, ballots=12, spoiled_every=4)
    with transaction(engine) as s:
        job = planning.create_tally_job(s, eid, 5)
    complete_tally(engine, job.job_id)
    with transaction(engine) as s:
        s.execute(update(Election).where(Election.id == eid).values(state="tallied"))
    return eid


def _refused(client, engine: Engine, code: int, body: dict, headers: dict, match: str = "") -> None:  # type: ignore[no-untyped-def]
    before = row_counts(engine)
    r = client.post("/api/verify/create", json=body, headers=headers)
    assert r.status_code == code, r.text
    assert match in r.text
    assert row_counts(engine) == before


def test_verify_create(client, admin, engine: Engine, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    eid = _tallied(engine)
    _refused(client, engine, 409, {"election_id": eid}, admin, "only a decrypted election")
    _refused(client, engine, 404, {"election_id": 10**9}, admin, "does not exist")
    _refused(client, engine, 401, {"election_id": eid}, {}, "bearer token")
    other = issue_token(settings, "g", "guardian", election_id=eid + 1000, guardian_id="g1")
    _refused(client, engine, 403, {"election_id": eid}, {"Authorization": f"Bearer {other}"}, "election")
    _refused(client, engine, 422, {"election_id": eid, "priority": 10}, admin)

    with transaction(engine) as s:
        s.execute(update(Election).where(Election.id == eid).values(state="decrypted"))
    mine = issue_token(settings, "g1-of-e", "guardian", election_id=eid, guardian_id="g1")
    r = client.post(
        "/api/verify/create",
        json={"election_id": eid, "priority": 2},
        headers={"Authorization": f"Bearer {mine}"},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "QUEUED" and doc["totalChunks"] == 3 + 1
    assert doc["pollUrl"] == f"/api/jobs/{doc['jobId']}/status"
    with session_factory(engine)() as s:
        job = s.scalars(
            select(ElectionJob).where(ElectionJob.election_id == eid, ElectionJob.operation_type == "VERIFY")
        ).one()
        assert (str(job.job_id), job.priority, job.created_by) == (doc["jobId"], 2, "g1-of-e")
        tasks = s.scalars(select(ChunkTask.id).where(ChunkTask.job_id == job.job_id)).all()
        assert len(s.scalars(select(Outbox.id).where(Outbox.job_id == job.job_id)).all()) == len(tasks) == 4

    status = client.get(doc["pollUrl"], headers=admin).json()
    assert status["operationType"] == "VERIFY" and status["verification"] is None  # not run yet
    _refused(client, engine, 409, {"election_id": eid}, admin, "already has a verify job")
