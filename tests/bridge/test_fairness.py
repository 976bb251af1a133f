"""Fair share across concurrent jobs (issue 12): the window, round-robin order and priorities.

Real PostgreSQL, RabbitMQ (this session's vhost) and a local Ray, with the counting body of ``fakes.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bridge.brokers.rabbitmq import RabbitMQBroker, RabbitMQPublisher
from bridge.executor import Executor
from bridge.reconciler import Reconciler
from bridge.relay import Relay
from service.db.models import ElectionJob
from service.db.session import SessionFactory
from service.jobs import outbox
from tests.bridge.fakes import BODY
from tests.bridge.helpers_bridge import InThread, job_ended, job_row, make_tally_job, queue_depth, wait_for

pytestmark = pytest.mark.services
HERE = Path(__file__).resolve().parent
WINDOW = 4


@contextmanager
def fair_pipeline(
    settings, factory, *, window: int | None = WINDOW, with_bridge: bool = True, stale_after: float = 3
) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Relay with a window, reconciler and (unless told otherwise) an executor over RabbitMQ, in threads."""
    with ExitStack() as stack:
        relay = Relay(factory, RabbitMQPublisher(settings.amqp_url), poll_interval=0.05, window=window)
        stack.enter_context(InThread(relay))
        reconciler = Reconciler(factory, interval=0.5, stale_after=timedelta(seconds=stale_after))
        stack.enter_context(InThread(reconciler))
        if with_bridge:
            bridge = Executor(
                factory,
                RabbitMQBroker(settings.amqp_url),
                settings,
                bodies={"TALLY": BODY},
                shutdown_grace=10,
            )
            stack.enter_context(InThread(bridge))
            assert bridge.ready.wait(30)
        yield


class Sampler:
    """Samples, until stopped, the tally queue's depth and each live job's chunks in flight."""

    def __init__(self, settings, factory) -> None:  # type: ignore[no-untyped-def]
        self.settings, self.factory = settings, factory
        self.depths: list[tuple[int, int]] = []  # (ready messages, live jobs)
        self.in_flight: list[int] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with self.factory() as s:
                live = list(
                    s.scalars(
                        select(ElectionJob.job_id).where(ElectionJob.status.in_(["QUEUED", "IN_PROGRESS"]))
                    )
                )
                flying = outbox.in_flight(select(ElectionJob.job_id))
                self.in_flight.extend(n for _, n in s.execute(select(flying.c.job_id, flying.c.n)))
            self.depths.append((queue_depth(self.settings.amqp_url, "tally.queue"), len(live)))

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=30)


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
                    {"election_id": e.id, "object_id": f"b{i}", "state": 1, "code": f"c{i}", "payload": b"\0"}
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


def test_small_job_completes_before_the_large_one_is_half_done(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    """A 60-chunk job, then a 2-chunk one submitted after it has started: the small one waits for at most
    a window of the large one's chunks. Meanwhile the queue never holds more than the window times the
    live jobs, and no job has more than the window in flight."""
    _, large = make_tally_job(factory, ballots=60, chunk_size=1, metadata={"sleep": 0.2})
    with fair_pipeline(settings, factory), Sampler(settings, factory) as sampler:
        wait_for(lambda: job_row(factory, large).processed_chunks >= 4, timeout=90)
        _, small = make_tally_job(factory, ballots=2, chunk_size=1)
        wait_for(job_ended(factory, small), timeout=90)
        large_done = job_row(factory, large).processed_chunks
        wait_for(job_ended(factory, large), timeout=120)
    assert job_row(factory, small).status == job_row(factory, large).status == "COMPLETED"
    assert large_done < 30, (large_done, _timeline(factory, small))
    assert sampler.depths and all(depth <= WINDOW * max(live, 1) for depth, live in sampler.depths), (
        sampler.depths
    )
    assert sampler.in_flight and max(sampler.in_flight) <= WINDOW


def _timeline(factory: SessionFactory, job_id: uuid.UUID) -> list[tuple[object, ...]]:
    """For a failure message: when each task of the job was claimed, ended, and how often tried."""
    from tests.bridge.helpers_bridge import tasks_of

    return [(t.id, t.state, t.attempts, t.started_at, t.finished_at) for t in tasks_of(factory, job_id)]


def _bridge_process(settings) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    import ray

    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "run_bridge.py"),
            settings.database_url,
            settings.amqp_url,
            ray.get_runtime_context().gcs_address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_small_job_first_across_a_bridge_kill_and_restart(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    """The same with the bridge killed (SIGKILL, chunks in flight) and a new one started in between: the
    window's state is in PostgreSQL, so the small job still waits for at most a window of chunks.

    The reconciler's ``stale_after`` outlasts the new bridge's start (seconds on a loaded machine): with no
    consumer, a queued message past it counts as lost and is published again, its task leaves the window
    meanwhile (``outbox.in_flight``), and each round lets W more of the large job's rows out ahead of the
    small job's (``transitions.reclaimable``: the window must be longer than a message can sit queued)."""
    _, large = make_tally_job(factory, ballots=60, chunk_size=1, metadata={"sleep": 0.2})
    with fair_pipeline(settings, factory, with_bridge=False, stale_after=20):
        first = _bridge_process(settings)
        try:
            wait_for(lambda: job_row(factory, large).processed_chunks >= 4, timeout=90)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        _, small = make_tally_job(factory, ballots=2, chunk_size=1)
        second = _bridge_process(settings)
        try:
            wait_for(job_ended(factory, small), timeout=120)
            large_done = job_row(factory, large).processed_chunks
            wait_for(job_ended(factory, large), timeout=180)
        finally:
            second.terminate()
            second.communicate(timeout=60)
    assert job_row(factory, small).status == job_row(factory, large).status == "COMPLETED"
    assert large_done < 30, (large_done, _timeline(factory, small))


def test_high_priority_job_submitted_last_finishes_first(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    """Three jobs of 8 chunks; the third, of priority 3, is submitted once the other two have started:
    it finishes first, and the two of priority 0 still finish."""
    _, a = make_tally_job(factory, ballots=8, chunk_size=1, metadata={"sleep": 0.2})
    _, b = make_tally_job(factory, ballots=8, chunk_size=1, metadata={"sleep": 0.2})
    with fair_pipeline(settings, factory, window=2):
        wait_for(lambda: job_row(factory, a).processed_chunks + job_row(factory, b).processed_chunks >= 1)
        _, c = make_tally_job(factory, ballots=8, chunk_size=1, metadata={"sleep": 0.2}, priority=3)
        for job in (a, b, c):
            wait_for(job_ended(factory, job), timeout=120)
    ends = {j: job_row(factory, j) for j in (a, b, c)}
    assert {j.status for j in ends.values()} == {"COMPLETED"}
    assert ends[c].completed_at < min(ends[a].completed_at, ends[b].completed_at)
