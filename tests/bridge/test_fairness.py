"""Fair share across concurrent jobs (issue 12): the window, round-robin order and priorities.

Real PostgreSQL, RabbitMQ (this session's vhost) and a local Ray, with the counting body of ``fakes.py``.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from bridge.brokers.rabbitmq import RabbitMQPublisher
from bridge.relay import Relay
from service.db.models import ElectionJob
from service.db.session import SessionFactory
from service.jobs import outbox
from tests.bridge.helpers_bridge import make_tally_job, queue_depth

pytestmark = pytest.mark.services


def set_priority(factory: SessionFactory, job_id: uuid.UUID, priority: int) -> None:
    with factory.begin() as s:
        s.execute(update(ElectionJob).where(ElectionJob.job_id == job_id).values(priority=priority))


def test_window_bounds_each_jobs_messages_in_the_queue(settings, factory, clean) -> None:  # type: ignore[no-untyped-def]
    """No consumer: however many rounds the relay runs, each job has exactly W messages queued; the
    rest wait unsent. Without a window every row goes at once (what the window prevents)."""
    make_tally_job(factory, ballots=60, chunk_size=1)
    make_tally_job(factory, ballots=2, chunk_size=1)
    relay = Relay(factory, RabbitMQPublisher(settings.amqp_url), window=4)
    try:
        for _ in range(3):
            relay.run_once()
        assert queue_depth(settings.amqp_url, "tally.queue") == 4 + 2
        with factory() as s:
            assert outbox.unsent(s) == 56
        relay.window = None
        relay.run_once()
        assert queue_depth(settings.amqp_url, "tally.queue") == 62
    finally:
        relay.publisher.close()


def test_take_due_round_robin_and_priority_weights(factory, clean) -> None:  # type: ignore[no-untyped-def]
    """Rows come round-robin across jobs (a job of priority p gets p + 1 per round, served first),
    and a job's window scales with p + 1."""
    _, a = make_tally_job(factory, ballots=10, chunk_size=1)
    _, b = make_tally_job(factory, ballots=10, chunk_size=1)
    _, c = make_tally_job(factory, ballots=10, chunk_size=1)
    set_priority(factory, c, 2)
    with factory.begin() as s:
        order = [r.job_id for r in outbox.take_due(s, 10)]
    assert order == [c, c, c, a, b, c, c, c, a, b]
    with factory.begin() as s:
        taken = outbox.take_due(s, 100, window=2)
        outbox.mark_sent(s, taken)
    counts = {j: sum(1 for r in taken if r.job_id == j) for j in (a, b, c)}
    assert counts == {a: 2, b: 2, c: 6}
    with factory.begin() as s:  # the windows are full: nothing more until a chunk ends
        assert outbox.take_due(s, 100, window=2) == []


def test_take_due_window_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same query on the embedded default's SQLite: round-robin, windows, a retry gets a slot."""
    from sqlalchemy import insert

    from service.db import migrate
    from service.db.models import Ballot, ChunkTask, Election, TaskState
    from service.db.session import session_factory
    from service.jobs import planning

    url = f"sqlite:///{tmp_path / 'fair.sqlite3'}"
    migrate.upgrade(url)
    factory = session_factory(url)
    jobs = []
    with factory.begin() as s:
        for n in (6, 2):
            e = Election(name="fair", state="closed", manifest={}, number_of_guardians=1, quorum=1)
            s.add(e)
            s.flush()
            s.execute(
                insert(Ballot),
                [
                    {"election_id": e.id, "object_id": f"b{i}", "state": 1, "code": "c", "payload": b"\0"}
                    for i in range(n)
                ],
            )
            jobs.append(planning.create_tally_job(s, e.id, 1).job_id)
    big, small = jobs
    with factory.begin() as s:
        taken = outbox.take_due(s, 100, window=2)
        outbox.mark_sent(s, taken)
        order = [r.job_id for r in taken]  # one transaction: the same created_at, so either goes first
        assert {*order[:2]} == {*order[2:]} == {big, small}
    with factory.begin() as s:
        assert outbox.take_due(s, 100, window=2) == []
        # One of the big job's chunks ends, another goes back for a retry (a new unsent row): two slots.
        first, second = (s.get(ChunkTask, r.task_id) for r in taken if r.job_id == big)
        assert first is not None and second is not None
        first.state = TaskState.DONE.value
        outbox.enqueue(s, second.id, big, "TALLY")
    with factory.begin() as s:
        again = outbox.take_due(s, 100, window=2)
        assert [r.job_id for r in again] == [big, big]  # oldest first: the retry queues behind them
