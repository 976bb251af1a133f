"""The executor's logic over the in-memory stub broker (real PostgreSQL and a local Ray; no RabbitMQ).

What a delivery's fate is, whatever the broker: done -> ACK once, duplicates -> ACK without effect,
unreadable -> DEAD_LETTER, attempts exhausted -> DEAD_LETTER with the task FAILED, stop -> in-flight
chunks released and REQUEUEd, a broker outage -> reconnect and carry on. RabbitMQ's own behaviour is
tested against the real broker in ``test_bridge_flow.py`` and ``test_topology_relay.py``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from bridge.broker import Settlement
from bridge.brokers.stub import StubBroker
from bridge.executor import Executor
from service.db.session import session_factory
from service.jobs.transitions import Policy
from tests.bridge.fakes import BODY
from tests.bridge.helpers_bridge import election_row, job_row, make_tally_job, tasks_of, wait_for

pytestmark = pytest.mark.services


def _executor(settings, broker: StubBroker, **kw) -> Executor:  # type: ignore[no-untyped-def]
    factory = session_factory(settings.sqlalchemy_url)
    return Executor(
        factory, broker, settings, bodies={"TALLY": BODY}, poll_interval=0.05, shutdown_grace=5, **kw
    )


def _publish_all(broker: StubBroker, factory, job_id, times: int = 1) -> list[int]:  # type: ignore[no-untyped-def]
    ids = [t.id for t in tasks_of(factory, job_id)]
    for _ in range(times):
        for task_id in ids:
            broker.publish(task_id, "TALLY", job_id)
    return ids


def test_each_chunk_once_whatever_the_duplicates(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=20, chunk_size=4)
    broker = StubBroker()
    ids = _publish_all(broker, factory, job_id, times=3)
    broker.publish(None, None)  # an unreadable message among them
    _executor(settings, broker).run_until_idle(timeout=120)
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("COMPLETED", 5, 0)
    assert election_row(factory, election_id).result == {"ballots": 20, "chunks": 5, "finalized": 1}
    assert all(t.attempts == 1 for t in tasks_of(factory, job_id))
    acks = [t for t, how in broker.settled if how == Settlement.ACK]
    assert sorted(acks) == sorted(ids * 3), "every delivery settled once, duplicates acked without effect"
    assert (None, Settlement.DEAD_LETTER) in broker.settled


def test_attempts_exhausted_dead_letters_and_fails_the_task(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=6, chunk_size=3, metadata={"poison": [2]})
    broker = StubBroker()
    _publish_all(broker, factory, job_id)
    one_attempt = replace(Policy.from_settings(settings), max_attempts=1)
    _executor(settings, broker, policy=one_attempt).run_until_idle(timeout=120)
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("FAILED", 1, 1)
    failed = [t for t in tasks_of(factory, job_id) if t.state == "FAILED"]
    assert len(failed) == 1 and failed[0].last_error == "PoisonError: chunk 2 is poisoned"
    assert (failed[0].id, Settlement.DEAD_LETTER) in broker.settled


def test_a_chunk_past_its_time_limit_is_killed_and_fails(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=6, chunk_size=3, metadata={"hang": [2]})
    broker = StubBroker()
    _publish_all(broker, factory, job_id)
    limited = settings.model_copy(update={"chunk_time_limit_seconds": 3.0})
    one_attempt = replace(Policy.from_settings(settings), max_attempts=1)
    _executor(limited, broker, policy=one_attempt).run_until_idle(timeout=120)
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("FAILED", 1, 1)
    (failed,) = [t for t in tasks_of(factory, job_id) if t.state == "FAILED"]
    assert "TimeLimitExceeded: still running after its time limit of 3 s" in (failed.last_error or "")
    assert (failed.id, Settlement.DEAD_LETTER) in broker.settled


def test_stop_releases_chunks_in_flight(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=8, chunk_size=2, metadata={"sleep": 3})
    broker = StubBroker()
    _publish_all(broker, factory, job_id)
    ex = Executor(factory, broker, settings, bodies={"TALLY": BODY}, poll_interval=0.05, shutdown_grace=0.2)
    thread = threading.Thread(target=ex.run, daemon=True)
    thread.start()
    wait_for(lambda: any(t.state == "RUNNING" for t in tasks_of(factory, job_id)), timeout=60)
    time.sleep(0.3)
    ex.stop()
    thread.join(timeout=60)
    assert not thread.is_alive()
    tasks = tasks_of(factory, job_id)
    assert "RUNNING" not in {t.state for t in tasks}, "released, not left to a lease"
    assert all(t.attempts == (1 if t.state == "DONE" else 0) for t in tasks)
    assert any(how == Settlement.REQUEUE for _, how in broker.settled)


def test_a_broker_outage_is_survived(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=9, chunk_size=3)
    broker = StubBroker()
    broker.down = True
    ex = _executor(settings, broker)
    thread = threading.Thread(target=ex.run, daemon=True)
    thread.start()
    wait_for(lambda: ex.reconnects >= 2, timeout=30)
    broker.down = False
    _publish_all(broker, factory, job_id)
    wait_for(lambda: job_row(factory, job_id).status == "COMPLETED", timeout=60)
    ex.stop()
    thread.join(timeout=60)
