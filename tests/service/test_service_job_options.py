"""Job options at creation (issue 12): priority and callback URL on the create routes, the allow-list
(422, nothing written), and the stuck flag and metric as the API shows them. Real PostgreSQL; no bridge."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from helpers_service import api_settings, make_election, row_counts
from sqlalchemy import Engine, func, update

from service.db.models import ElectionJob
from service.db.session import session_factory
from service.jobs import callbacks
from service.settings import Settings

ALLOWED = "http://127.0.0.1:8099/hooks/"


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(
        db_url,
        tmp_path_factory.mktemp("data"),
        callback_secret="test-callback-secret-0123456789abcdef",
        callback_allowed_urls=f"{ALLOWED}, https://backend.example.org/amarvote",
        stuck_after_seconds=1.0,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8098/hooks/x",  # another port
        "http://127.0.0.1:8099/other",  # another path
        "http://127.0.0.1:80990/hooks/",  # a port that merely starts like the allowed one
        "https://127.0.0.1:8099/hooks/x",  # another scheme
        "http://user@127.0.0.1:8099/hooks/x",  # credentials in the URL
        "https://backend.example.org.evil.net/amarvote",  # a host that merely starts like the allowed one
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_callback_url_outside_the_allow_list_is_refused_and_writes_nothing(
    client: TestClient, admin: dict[str, str], engine: Engine, url: str
) -> None:
    eid = make_election(engine, ballots=4)
    before = row_counts(engine)
    r = client.post("/api/tally/create", json={"election_id": eid, "callback_url": url}, headers=admin)
    assert r.status_code == 422, r.text
    assert "callback" in r.text
    assert row_counts(engine) == before
    r = client.post("/api/combine/decryption", json={"election_id": eid, "callback_url": url}, headers=admin)
    assert r.status_code == 422, r.text


def test_priority_and_callback_are_stored_and_shown(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    eid = make_election(engine, ballots=4)
    r = client.post("/api/tally/create", json={"election_id": eid, "priority": 10}, headers=admin)
    assert r.status_code == 422  # out of range
    url = ALLOWED + "tally?e=1"
    r = client.post(
        "/api/tally/create",
        json={"election_id": eid, "chunk_size": 2, "priority": 3, "callback_url": url},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    job_id = r.json()["jobId"]
    with session_factory(engine)() as s:
        job = s.get(ElectionJob, job_id)
        assert job is not None and (job.priority, job.callback_url) == (3, url)
    doc = client.get(f"/api/jobs/{job_id}/status", headers=admin).json()
    assert (doc["priority"], doc["callbackUrl"], doc["callback"]) == (3, url, None)
    schema = client.get("/openapi.json").json()
    body = schema["components"]["schemas"]["CreateTally"]["properties"]
    assert {"priority", "callback_url"} <= set(body)
    assert "422" in schema["paths"]["/api/tally/create"]["post"]["responses"]


def test_callbacks_refused_without_a_secret(db_url: str, engine: Engine) -> None:
    plain = Settings(database_url=db_url, callback_allowed_urls=ALLOWED)
    with pytest.raises(Exception, match="not configured"):
        callbacks.check_url(plain, ALLOWED + "x")
    assert callbacks.check_url(plain, None) is None


def test_stuck_flag_and_metric_from_the_api(
    client: TestClient, admin: dict[str, str], engine: Engine
) -> None:
    """A job whose last progress is older than AMARVOTE_STUCK_AFTER_SECONDS (1 s here) is stuck in its
    status, in the job list and in /metrics; progress unflags it."""
    eid = make_election(engine, ballots=4)
    job_id = client.post("/api/tally/create", json={"election_id": eid}, headers=admin).json()["jobId"]
    with session_factory(engine).begin() as s:  # as if created a minute ago, nothing since
        s.execute(
            update(ElectionJob)
            .where(ElectionJob.job_id == job_id)
            .values(created_at=ElectionJob.created_at - timedelta(minutes=1))
        )
    doc = client.get(f"/api/jobs/{job_id}/status", headers=admin).json()
    assert doc["stuck"] is True and doc["lastProgressAt"]
    listed = client.get("/api/jobs", params={"election_id": eid}, headers=admin).json()
    assert [d["stuck"] for d in listed] == [True]
    metrics = client.get("/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith('amarvote_jobs_stuck{operation="TALLY"}'))
    assert float(line.split()[-1]) >= 1
    with session_factory(engine).begin() as s:
        # A chunk ends (dated a minute ahead, so a slow machine cannot make it a second old by the read).
        s.execute(
            update(ElectionJob)
            .where(ElectionJob.job_id == job_id)
            .values(last_progress_at=func.now() + timedelta(minutes=1))
        )
    assert client.get(f"/api/jobs/{job_id}/status", headers=admin).json()["stuck"] is False
