"""The executor over the embedded outbox on SQLite (no RabbitMQ): the same claim/complete/fail path."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, update

from bridge.brokers.outbox import OutboxBroker
from bridge.executor import Executor
from service.db import migrate
from service.db.models import Ballot, Election, ElectionJob
from service.db.session import session_factory
from service.jobs import planning, transitions
from service.settings import Settings
from tests.bridge.fakes import BODY
from tests.bridge.helpers_bridge import election_row, job_row, tasks_of


@pytest.fixture()
def sqlite_settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    s = Settings(
        data_dir=tmp_path,
        max_attempts=2,
        retry_backoff_seconds=0.1,
        lease_seconds=5,
        task_memory_mb=64,
        max_in_flight=4,
    )
    migrate.upgrade(s.sqlalchemy_url)
    return s


def test_embedded_runner_completes_fails_and_redrives(sqlite_settings, ray_local) -> None:  # type: ignore[no-untyped-def]
    assert sqlite_settings.embedded and sqlite_settings.sqlalchemy_url.startswith("sqlite")
    factory = session_factory(sqlite_settings.sqlalchemy_url)
    with factory.begin() as s:
        e = Election(name="embedded", state="closed", manifest={}, number_of_guardians=1, quorum=1)
        s.add(e)
        s.flush()
        s.execute(
            insert(Ballot),
            [
                {"election_id": e.id, "object_id": f"b{i}", "state": 1, "code": f"c{i}", "payload": b"\0"}
                for i in range(23)
            ],
        )
        job = planning.create_tally_job(s, e.id, 2)
        job.metadata_ = {**job.metadata_, "poison": [2]}
        election_id, job_id = e.id, job.job_id

    runner = Executor(
        factory, OutboxBroker(factory), sqlite_settings, bodies={"TALLY": BODY}, poll_interval=0.1
    )
    runner.run_until_idle(timeout=120)
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("FAILED", 11, 1)
    assert "chunk 2: PoisonError" in job.error_message
    assert sorted(t.attempts for t in tasks_of(factory, job_id)) == [1] * 11 + [2]

    with factory.begin() as s:
        s.execute(update(ElectionJob).where(ElectionJob.job_id == job_id).values(metadata_={}))
        assert transitions.redrive_failed(s, job_id) == 1
    runner.run_until_idle(timeout=120)
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("COMPLETED", 12, 0)
    assert election_row(factory, election_id).result == {"ballots": 23, "chunks": 12, "finalized": 1}
