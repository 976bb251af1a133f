"""Faults that must cost nothing: a worker that dies at every attempt, a database outage, skewed clocks,
a re-drive of a superseded job. Real PostgreSQL (reached through a TCP proxy the test can cut), RabbitMQ
and a local Ray."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from bridge.broker import Settlement
from bridge.brokers.stub import StubBroker
from bridge.executor import Executor
from bridge.reconciler import reconcile_once
from service.db.models import ChunkTask, ElectionJob, Outbox
from service.db.session import session_factory
from service.errors import Conflict
from service.jobs import clock, transitions
from service.jobs.redrive import redrive_job
from service.jobs.transitions import NOTHING_TO_DO, Claimed
from tests.bridge.fakes import BODY
from tests.bridge.helpers_bridge import drain_queue, job_row, make_tally_job, tasks_of, wait_for
from tests.netproxy import Proxy

pytestmark = pytest.mark.services


def _expire(factory, task_id: int) -> None:  # type: ignore[no-untyped-def]
    with factory.begin() as s:
        s.execute(
            update(ChunkTask)
            .where(ChunkTask.id == task_id)
            .values(lease_expires_at=clock.utcnow() - timedelta(seconds=1))
        )


def test_a_lease_taken_over_at_the_limit_fails_the_task(factory, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=4, chunk_size=2)
    first, second = (t.id for t in tasks_of(factory, job_id))
    policy = transitions.Policy(max_attempts=3, backoff_seconds=0, lease_seconds=60)
    outcomes = []
    for attempt in range(6):  # a chunk that kills its worker: the lease runs out every time
        with factory.begin() as s:
            outcomes.append(transitions.claim(s, first, f"worker-{attempt}", policy))
        _expire(factory, first)
    assert [o.status for o in outcomes] == [Claimed.LEASED] * 3 + [Claimed.ABANDONED] + [Claimed.NOTHING] * 2
    (task,) = [t for t in tasks_of(factory, job_id) if t.id == first]
    assert (task.state, task.attempts) == ("FAILED", 3)
    assert "its worker died 3 time(s)" in (task.last_error or "")
    # The job settles once its other chunk lands.
    with factory.begin() as s:
        transitions.claim(s, second, "w", policy)
    with factory.begin() as s:
        transitions.complete(s, second, lambda *_: None, lambda *_: None)
    job = job_row(factory, job_id)
    assert (job.status, job.failed_chunks, job.processed_chunks) == ("FAILED", 1, 1)
    assert "its worker died" in (job.error_message or "")


def test_the_reconciler_fails_an_abandoned_task_at_the_limit(factory, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=2, chunk_size=2)
    (task_id,) = (t.id for t in tasks_of(factory, job_id))
    policy = transitions.Policy(max_attempts=1, lease_seconds=60)
    with factory.begin() as s:
        transitions.claim(s, task_id, "gone", policy)
        s.execute(update(ChunkTask).values(lease_expires_at=clock.utcnow() - timedelta(hours=1)))
    with factory.begin() as s:  # no message published for it in the window
        s.execute(update(Outbox).values(sent_at=clock.utcnow() - timedelta(hours=2)))
        s.execute(update(Outbox).values(created_at=clock.utcnow() - timedelta(hours=2)))
    assert reconcile_once(factory, stale_after=timedelta(minutes=1), policy=policy) == 0
    (task,) = tasks_of(factory, job_id)
    assert task.state == "FAILED" and job_row(factory, job_id).status == "FAILED"


def test_backoff_and_leases_follow_the_database_clock(factory, clean, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A bridge host whose clock runs an hour ahead neither claims a retry early nor takes a live lease."""
    _, job_id = make_tally_job(factory, ballots=4, chunk_size=2)
    a, b = (t.id for t in tasks_of(factory, job_id))
    policy = transitions.Policy(max_attempts=3, backoff_seconds=60, lease_seconds=60)
    with factory.begin() as s:
        transitions.claim(s, a, "w1", policy)
        transitions.claim(s, b, "w1", policy)
    with factory.begin() as s:
        assert transitions.fail(s, a, "w1", "boom", policy) == transitions.Outcome.RETRY
    ahead = clock.utcnow() + timedelta(hours=1)
    monkeypatch.setattr(clock, "utcnow", lambda: ahead)
    with factory.begin() as s:
        assert transitions.claim(s, a, "w2", policy) == NOTHING_TO_DO, (
            "its backoff has not passed on the database"
        )
        assert transitions.claim(s, b, "w2", policy) == NOTHING_TO_DO, "its lease is live on the database"


def test_a_superseded_job_is_not_redriven(factory, clean) -> None:  # type: ignore[no-untyped-def]
    _, old = make_tally_job(factory, ballots=2, chunk_size=2)
    with factory.begin() as s:
        job = s.get(ElectionJob, old)
        assert job is not None
        s.execute(
            update(ElectionJob).where(ElectionJob.job_id == old).values(status="FAILED", failed_chunks=1)
        )
        newer = ElectionJob(
            election_id=job.election_id,
            operation_type="TALLY",
            status="COMPLETED",
            total_chunks=0,
            processed_chunks=0,
            failed_chunks=0,
        )
        s.add(newer)
        s.flush()
        newer_id = newer.job_id
    with pytest.raises(Conflict, match=f"superseded by job {newer_id}"), factory.begin() as s:
        redrive_job(s, old)


def _via(proxy: Proxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def test_a_database_outage_costs_no_attempt_and_dead_letters_nothing(
    settings, factory, ray_local, clean
) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=40, chunk_size=2, metadata={"sleep": 0.3})
    u = urlparse(settings.database_url)
    with Proxy(u.hostname or "127.0.0.1", u.port or 5432) as proxy:
        through = settings.model_copy(update={"database_url": _via(proxy, settings.database_url)})
        broker = StubBroker()
        for t in tasks_of(factory, job_id):
            broker.publish(t.id, "TALLY", job_id)
        policy = replace(transitions.Policy.from_settings(settings), max_attempts=2)
        ex = Executor(
            session_factory(through.sqlalchemy_url),
            broker,
            through,
            bodies={"TALLY": BODY},
            poll_interval=0.05,
            db_probe_interval=0.5,
            policy=policy,
        )
        thread = threading.Thread(target=ex.run, daemon=True)
        thread.start()
        wait_for(lambda: job_row(factory, job_id).processed_chunks >= 4, timeout=120)
        proxy.cut()  # the database goes away for longer than every retry of a transaction
        time.sleep(12)
        assert ex.pauses >= 1, "consumption paused while the database was away"
        proxy.restore()
        wait_for(lambda: job_row(factory, job_id).status in ("COMPLETED", "FAILED"), timeout=180)
        ex.stop()
        thread.join(timeout=60)
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("COMPLETED", 20, 0)
    assert all(t.attempts == 1 for t in tasks_of(factory, job_id)), [
        t.attempts for t in tasks_of(factory, job_id)
    ]
    assert not [t for t, how in broker.settled if how in (Settlement.DEAD_LETTER, Settlement.REQUEUE)]


def test_a_database_outage_behind_rabbitmq_leaves_the_dead_letter_queue_empty(
    settings, factory, ray_local, clean
) -> None:  # type: ignore[no-untyped-def]
    from bridge.brokers.rabbitmq import RabbitMQBroker, RabbitMQPublisher
    from bridge.relay import Relay
    from tests.bridge.helpers_bridge import InThread

    _, job_id = make_tally_job(factory, ballots=30, chunk_size=2, metadata={"sleep": 0.3})
    u = urlparse(settings.database_url)
    with Proxy(u.hostname or "127.0.0.1", u.port or 5432) as proxy:
        through = settings.model_copy(update={"database_url": _via(proxy, settings.database_url)})
        ex = Executor(
            session_factory(through.sqlalchemy_url),
            RabbitMQBroker(settings.amqp_url),
            through,
            bodies={"TALLY": BODY},
            poll_interval=0.1,
            db_probe_interval=0.5,
        )
        with InThread(Relay(factory, RabbitMQPublisher(settings.amqp_url), poll_interval=0.1)), InThread(ex):
            wait_for(lambda: job_row(factory, job_id).processed_chunks >= 3, timeout=120)
            proxy.cut()
            time.sleep(12)
            proxy.restore()
            try:
                wait_for(lambda: job_row(factory, job_id).status in ("COMPLETED", "FAILED"), timeout=180)
            except AssertionError:
                raise AssertionError(_timeline(factory, job_id, ex)) from None
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks) == ("COMPLETED", 15)
    assert all(t.attempts == 1 for t in tasks_of(factory, job_id))
    assert drain_queue(settings.amqp_url, "tally.queue.dlq") == []
    with factory() as s:
        assert not s.scalars(
            select(ChunkTask).where(ChunkTask.job_id == job_id, ChunkTask.state != "DONE")
        ).all()


def _timeline(factory, job_id, ex) -> str:  # type: ignore[no-untyped-def]
    """What each task and the executor held when a job did not settle (for a failure's message)."""
    tasks = [
        (t.id, t.state, t.attempts, t.lease_owner == ex.worker_id, (t.last_error or "")[:80])
        for t in tasks_of(factory, job_id)
    ]
    with factory() as s:
        rows = [(o.task_id, o.sent_at is not None) for o in s.scalars(select(Outbox).order_by(Outbox.id))]
    held = f"executor in flight {len(ex.in_flight)}, held {ex.outage.held()}"
    return f"job did not settle; tasks {tasks}; outbox {rows}; {held}"
