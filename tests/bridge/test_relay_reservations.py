"""The relay publishes outside any transaction (issue 20): it reserves due rows in a short transaction,
publishes them with confirms holding no lock, then marks them sent.

Real PostgreSQL and RabbitMQ (this session's vhost); the last test runs the same rows on SQLite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from bridge.broker import Published
from bridge.brokers.outbox import OutboxBroker
from bridge.brokers.rabbitmq import RabbitMQPublisher
from bridge.relay import Relay
from service.db.models import Outbox
from service.db.session import SessionFactory
from service.jobs import outbox
from service.jobs.outbox import Message
from tests.bridge.helpers_bridge import drain_queue, make_tally_job, queue_depth, wait_for

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


class StalledPublisher:
    """A real RabbitMQ publisher whose ``publish`` first waits for ``go`` (a broker that does not answer)."""

    def __init__(self, amqp_url: str) -> None:
        self.inner = RabbitMQPublisher(amqp_url)
        self.entered = threading.Event()
        self.go = threading.Event()

    def publish(self, messages: Sequence[Message]) -> Published:
        self.entered.set()
        assert self.go.wait(60)
        return self.inner.publish(messages)

    def close(self) -> None:
        self.inner.close()


def _rows(operation: str, task_ids: range) -> list[dict[str, Any]]:
    job = uuid.uuid4()
    return [{"operation": operation, "job_id": job, "task_id": i} for i in task_ids]


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def _open_transactions(factory: SessionFactory) -> tuple[int, int]:
    """Sessions of this database idle in a transaction (other than the asking one), advisory locks held."""
    with factory() as s:
        idle = s.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
            )
        )
        advisory = s.scalar(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
            )
        )
    return int(idle or 0), int(advisory or 0)


def _unsent(factory: SessionFactory) -> int:
    with factory() as s:
        return outbox.unsent(s)


def test_a_stalled_publish_holds_no_lock_and_blocks_no_other_taker(factory, amqp_url, clean) -> None:  # type: ignore[no-untyped-def]
    """While one relay waits on its broker, no transaction or advisory lock of its stays open, and a second
    relay and an embedded broker take and deliver the other due rows."""
    with factory.begin() as s:
        s.execute(insert(Outbox), _rows("TALLY", range(3)))
    stalled = StalledPublisher(amqp_url)
    first = Relay(factory, stalled, batch_size=3)
    second = Relay(factory, RabbitMQPublisher(amqp_url))
    try:
        t1, n1 = _in_thread(first.run_once)
        assert stalled.entered.wait(30)
        assert _open_transactions(factory) == (0, 0)
        with factory.begin() as s:
            s.execute(insert(Outbox), _rows("TALLY", range(3, 5)) + _rows("COMBINE_DECRYPTION", range(5, 7)))
        t2, n2 = _in_thread(second.run_once)
        t2.join(30)
        assert not t2.is_alive() and n2 == [4]  # the stalled relay's three rows are not its to take
        broker = OutboxBroker(factory)
        with factory.begin() as s:
            s.execute(insert(Outbox), _rows("COMBINE_DECRYPTION", range(7, 9)))
        broker.consume(["COMBINE_DECRYPTION"], 10)
        t3, taken = _in_thread(lambda: broker.poll(0, 10))
        t3.join(30)
        assert not t3.is_alive() and sorted(d.task_id for d in taken[0]) == [7, 8]
        assert queue_depth(amqp_url, "tally.queue") == 2 and _unsent(factory) == 3
    finally:
        stalled.go.set()
        t1.join(60)
        first.publisher.close()
        second.publisher.close()
    assert n1 == [3] and _unsent(factory) == 0
    assert sorted(b["task_id"] for b in drain_queue(amqp_url, "tally.queue")) == [0, 1, 2, 3, 4]
    assert sorted(b["task_id"] for b in drain_queue(amqp_url, "combine.queue")) == [5, 6]


_CRASHING_RELAY = """
import sys, threading
from datetime import timedelta
from bridge.relay import Relay
from service.db.session import session_factory

class NeverConfirms:
    def publish(self, messages):
        threading.Event().wait()

    def close(self):
        pass

Relay(session_factory(sys.argv[1]), NeverConfirms(), lease=timedelta(seconds=float(sys.argv[2]))).run_once()
"""


def test_rows_of_a_relay_killed_before_marking_them_sent_go_again_once_its_reservation_expires(
    factory, bridge_db, amqp_url, clean
) -> None:  # type: ignore[no-untyped-def]
    lease = 8.0
    with factory.begin() as s:
        s.execute(insert(Outbox), _rows("TALLY", range(4)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _CRASHING_RELAY, bridge_db, str(lease)], env=env)

    def reserved() -> int:
        with factory() as s:
            return int(s.scalar(select(func.count()).where(Outbox.reserved_by.is_not(None))) or 0)

    try:
        wait_for(lambda: reserved() == 4 or proc.poll() is not None, timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # it is waiting for confirms: it dies before marking
        proc.wait(30)
    assert reserved() == 4 and _unsent(factory) == 4
    relay = Relay(factory, RabbitMQPublisher(amqp_url))
    try:
        assert relay.run_once() == 0  # still reserved by the dead relay: not due yet
        published, deadline = 0, time.monotonic() + 3 * lease
        while published < 4 and time.monotonic() < deadline:
            published += relay.run_once()
            time.sleep(0.2)
        assert published == 4
    finally:
        relay.publisher.close()
    assert _unsent(factory) == 0
    assert sorted(b["task_id"] for b in drain_queue(amqp_url, "tally.queue")) == [0, 1, 2, 3]


def test_the_window_counts_reserved_rows(factory, amqp_url, clean) -> None:  # type: ignore[no-untyped-def]
    """A relay's reservation fills its job's window like a sent message: no other taker goes past it
    while the publish runs, and the job's chunks in flight (``outbox.in_flight``) include it."""
    _, job = make_tally_job(factory, ballots=10, chunk_size=1)
    stalled = StalledPublisher(amqp_url)
    first = Relay(factory, stalled, window=2)
    second = Relay(factory, RabbitMQPublisher(amqp_url), window=2)
    try:
        t1, n1 = _in_thread(first.run_once)
        assert stalled.entered.wait(30)
        t2, n2 = _in_thread(second.run_once)
        t2.join(30)
        assert not t2.is_alive() and n2 == [0]
        broker = OutboxBroker(factory, window=2)
        broker.consume(["TALLY"], 10)
        assert broker.poll(0, 10) == []
        with factory() as s:
            flying = outbox.in_flight(select(Outbox.job_id).distinct())
            assert dict(s.execute(select(flying.c.job_id, flying.c.n)).all()) == {job: 2}
    finally:
        stalled.go.set()
        t1.join(60)
        first.publisher.close()
        second.publisher.close()
    assert n1 == [2] and queue_depth(amqp_url, "tally.queue") == 2 and _unsent(factory) == 8
    with factory.begin() as s:  # marked sent: still the window's, nothing more is due
        assert outbox.take_due(s, 100, window=2) == []


def test_reservations_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The embedded default's SQLite: a reserved row is skipped and fills the window until its reservation
    expires; then it is due again, and ending the reservation marks it sent or releases it."""
    from service.db import migrate
    from service.db.session import session_factory

    url = f"sqlite:///{tmp_path / 'reserve.sqlite3'}"
    migrate.upgrade(url)
    factory = session_factory(url)
    with factory.begin() as s:
        s.execute(insert(Outbox), _rows("TALLY", range(3)))
    with factory.begin() as s:
        rows = outbox.take_due(s, 2)
        token = outbox.reserve(s, rows, timedelta(minutes=1))
        ids = [r.id for r in rows]
    with factory.begin() as s:
        assert [r.task_id for r in outbox.take_due(s, 10)] == [2]  # the reserved two are skipped
    with factory.begin() as s:
        outbox.end_reservation(s, token, ids, ids[:1], [], timedelta(seconds=5))  # one confirmed
    with factory.begin() as s:
        again = outbox.take_due(s, 10)
        assert [r.task_id for r in again] == [1, 2]  # the unconfirmed one is due again
        outbox.reserve(s, again, timedelta(seconds=-1))  # a dead relay's reservation, already expired
    with factory.begin() as s:
        assert [r.task_id for r in outbox.take_due(s, 10)] == [1, 2]
        assert outbox.unsent(s) == 2
