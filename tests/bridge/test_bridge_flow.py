"""The bridge end to end: outbox → relay → RabbitMQ → executor → Ray → PostgreSQL, and its failures.

Real PostgreSQL, RabbitMQ (this session's vhost) and a local Ray. The chunk body is the counting
stand-in of ``fakes.py`` (its effect on the election row is additive, so anything done twice shows),
so these tests are about delivery, not cryptography.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from bridge.broker import Delivery, Settlement
from bridge.brokers.rabbitmq import RabbitMQBroker, RabbitMQPublisher
from bridge.executor import Executor
from bridge.reconciler import Reconciler
from bridge.relay import Relay
from service.db.models import ElectionJob
from service.db.session import session_factory
from service.jobs import transitions
from tests.bridge.fakes import BODY
from tests.bridge.helpers_bridge import (
    InThread,
    chunk_numbers,
    drain_queue,
    election_row,
    job_ended,
    job_row,
    make_tally_job,
    publish_raw,
    tasks_of,
    wait_for,
)

pytestmark = pytest.mark.services
HERE = Path(__file__).resolve().parent


def executor(settings, broker: RabbitMQBroker | None = None) -> Executor:  # type: ignore[no-untyped-def]
    return Executor(
        session_factory(settings.sqlalchemy_url),
        broker or RabbitMQBroker(settings.amqp_url),
        settings,
        bodies={"TALLY": BODY},
        shutdown_grace=10,
    )


@contextmanager
def pipeline(
    settings, factory, *, bridge: Executor | None = None, with_bridge: bool = True
) -> Iterator[Executor | None]:  # type: ignore[no-untyped-def]
    """Relay, reconciler and (unless told otherwise) an executor over RabbitMQ, each in a thread."""
    with ExitStack() as stack:
        relay = Relay(factory, RabbitMQPublisher(settings.amqp_url), poll_interval=0.1)
        stack.enter_context(InThread(relay))
        stack.enter_context(InThread(Reconciler(factory, interval=0.5, stale_after=timedelta(seconds=3))))
        b = None
        if with_bridge:
            b = bridge or executor(settings)
            stack.enter_context(InThread(b))
            assert b.ready.wait(30)
        yield b


def assert_exactly_once(factory, election_id, job_id, chunks: int, ballots: int) -> None:  # type: ignore[no-untyped-def]
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks, job.total_chunks) == (
        "COMPLETED",
        chunks,
        0,
        chunks,
    )
    assert {t.state for t in tasks_of(factory, job_id)} == {"DONE"}
    assert election_row(factory, election_id).result == {"ballots": ballots, "chunks": chunks, "finalized": 1}


def test_tally_job_completes_every_chunk_once(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=95, chunk_size=5)
    with pipeline(settings, factory):
        wait_for(job_ended(factory, job_id), timeout=90)
    assert_exactly_once(factory, election_id, job_id, chunks=19, ballots=95)
    assert all(t.attempts == 1 for t in tasks_of(factory, job_id))
    job = job_row(factory, job_id)
    assert job.started_at is not None and job.completed_at >= job.started_at
    assert drain_queue(settings.amqp_url, "tally.queue.dlq") == []


class LosesAcks(RabbitMQBroker):
    """Loses the ack of the first committed chunk: the channel dies between the commit and the ack."""

    lost = 0

    def settle(self, delivery: Delivery, how: Settlement) -> None:
        if how == Settlement.ACK and delivery.task_id is not None and self.lost == 0:
            self.lost += 1
            h = delivery.handle
            h.connection.add_callback_threadsafe(h.channel.close)  # unacked messages are requeued
            return
        super().settle(delivery, how)


def test_duplicates_and_a_lost_ack_count_once(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=40, chunk_size=4, metadata={"sleep": 0.1})
    for task in tasks_of(factory, job_id):  # every message twice more, by hand
        for _ in range(2):
            publish_raw(
                settings.amqp_url,
                "election.tally",
                {"job_id": str(job_id), "task_id": task.id, "operation": "TALLY"},
            )
    broker = LosesAcks(settings.amqp_url)
    with pipeline(settings, factory, bridge=executor(settings, broker)):
        wait_for(job_ended(factory, job_id), timeout=90)
    assert broker.lost == 1
    assert_exactly_once(factory, election_id, job_id, chunks=10, ballots=40)


class BrokerClosesChannel(RabbitMQBroker):
    """Makes the broker close the channel under it once, as ``consumer_timeout`` does
    (``docs/field-notes.md#rabbitmq``): an ack of an unknown delivery tag is a channel error (406), the
    connection stays open, pika raises nothing, and only ``channel.is_open`` tells. The real ack is never
    sent."""

    closed = 0

    def settle(self, delivery: Delivery, how: Settlement) -> None:
        if how == Settlement.ACK and delivery.task_id is not None and self.closed == 0:
            self.closed += 1
            h = delivery.handle
            h.connection.add_callback_threadsafe(lambda: h.channel.basic_ack(h.tag + 10_000))
            return
        super().settle(delivery, how)


def test_channel_closed_by_the_broker_is_noticed(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=30, chunk_size=3, metadata={"sleep": 0.1})
    broker = BrokerClosesChannel(settings.amqp_url)
    with pipeline(settings, factory, bridge=executor(settings, broker)):
        wait_for(job_ended(factory, job_id), timeout=90)
        generation = broker.generation
    assert broker.closed == 1 and generation >= 2  # it reconnected
    assert_exactly_once(factory, election_id, job_id, chunks=10, ballots=30)


def test_poison_chunk_fails_dead_letters_and_redrives(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=30, chunk_size=5, metadata={"poison": [3]})
    numbers = chunk_numbers(factory, job_id)
    with pipeline(settings, factory):
        wait_for(job_ended(factory, job_id), timeout=90)
        job = job_row(factory, job_id)
        assert (job.status, job.processed_chunks, job.failed_chunks) == ("FAILED", 5, 1)
        assert job.error_message == "1 chunk(s) failed: chunk 3: PoisonError: chunk 3 is poisoned"
        (bad,) = [t for t in tasks_of(factory, job_id) if t.state != "DONE"]
        assert numbers[bad.id] == 3
        assert (bad.state, bad.attempts, bad.last_error) == (
            "FAILED",
            settings.max_attempts,
            "PoisonError: chunk 3 is poisoned",
        )
        dead: list[dict] = []

        def dead_lettered() -> bool:
            dead.extend(drain_queue(settings.amqp_url, "tally.queue.dlq"))
            return bool(dead)

        wait_for(dead_lettered, timeout=10)
        assert [d["task_id"] for d in dead] == [bad.id]

        # The operator removes the cause and re-drives the failed chunk.
        with factory.begin() as s:
            s.execute(update(ElectionJob).where(ElectionJob.job_id == job_id).values(metadata_={}))
            assert transitions.redrive_failed(s, job_id) == 1
        wait_for(lambda: job_row(factory, job_id).status == "COMPLETED", timeout=60)
    assert_exactly_once(factory, election_id, job_id, chunks=6, ballots=30)


def test_ray_worker_death_is_an_attempt_counted_in_postgres(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=12, chunk_size=3, metadata={"die": [2]})
    numbers = chunk_numbers(factory, job_id)
    with pipeline(settings, factory):
        wait_for(job_ended(factory, job_id), timeout=90)
    assert_exactly_once(factory, election_id, job_id, chunks=4, ballots=12)
    for t in tasks_of(factory, job_id):
        if numbers[t.id] == 2:  # Ray did not retry it (max_retries=0): we counted and retried it
            assert t.attempts == 2 and "Worker" in (t.last_error or ""), t.last_error
        else:
            assert t.attempts == 1


@pytest.mark.exclusive
def test_rabbitmq_restart_mid_job(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=120, chunk_size=3, metadata={"sleep": 0.5})
    with pipeline(settings, factory):
        wait_for(lambda: job_row(factory, job_id).processed_chunks >= 3, timeout=60)
        subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, capture_output=True)
        try:
            assert job_row(factory, job_id).processed_chunks < 40  # the broker went down mid-job
            time.sleep(3)
        finally:
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, capture_output=True)
            subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, capture_output=True)
        wait_for(job_ended(factory, job_id), timeout=120)
    assert_exactly_once(factory, election_id, job_id, chunks=40, ballots=120)


def test_postgres_connections_dropped_mid_job(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=120, chunk_size=4, metadata={"sleep": 0.2})
    dbname = settings.database_url.rsplit("/", 1)[1]
    with pipeline(settings, factory):
        for threshold in (5, 15):
            wait_for(lambda t=threshold: job_row(factory, job_id).processed_chunks >= t, timeout=60)
            with factory.begin() as s:
                killed = s.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": dbname},
                ).scalar()
            assert killed > 0
        wait_for(job_ended(factory, job_id), timeout=120)
    assert_exactly_once(factory, election_id, job_id, chunks=30, ballots=120)


def _bridge_process(settings, grace: float = 30.0) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    import ray

    address = ray.get_runtime_context().gcs_address
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "run_bridge.py"),
            settings.database_url,
            settings.amqp_url,
            address,
            str(grace),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_kill_9_of_the_bridge_with_chunks_in_flight(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=60, chunk_size=3, metadata={"sleep": 0.5})
    with pipeline(settings, factory, with_bridge=False):
        first = _bridge_process(settings)
        try:
            # Killed while chunks run: some done, and one RUNNING at that very moment (between two chunks
            # every task may be briefly DONE or PENDING, so the two are waited for together).
            wait_for(
                lambda: (
                    job_row(factory, job_id).processed_chunks >= 3
                    and any(t.state == "RUNNING" for t in tasks_of(factory, job_id))
                ),
                timeout=90,
            )
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        assert job_row(factory, job_id).status == "IN_PROGRESS"
        second = _bridge_process(settings)
        try:
            wait_for(job_ended(factory, job_id), timeout=120)
        finally:
            second.terminate()
            out, _ = second.communicate(timeout=60)
        assert second.returncode == 0 and "bridge exited cleanly" in out
    assert_exactly_once(factory, election_id, job_id, chunks=20, ballots=60)


def test_sigterm_releases_in_flight_chunks(settings, factory, ray_local, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=24, chunk_size=3, metadata={"sleep": 2})
    with pipeline(settings, factory, with_bridge=False):
        proc = _bridge_process(settings, grace=0.5)
        try:
            wait_for(lambda: any(t.state == "RUNNING" for t in tasks_of(factory, job_id)), timeout=90)
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "bridge exited cleanly" in out, out
        released = re.search(r"stopped \((\d+) chunks released\)", out)
        assert released and int(released.group(1)) >= 1, out  # chunks were in flight at SIGTERM
        tasks = tasks_of(factory, job_id)
        assert "RUNNING" not in {t.state for t in tasks}  # released, not left to a lease
        assert all(t.attempts == (1 if t.state == "DONE" else 0) for t in tasks)
        with pipeline(settings, factory):
            wait_for(job_ended(factory, job_id), timeout=120)
    assert_exactly_once(factory, election_id, job_id, chunks=8, ballots=24)
