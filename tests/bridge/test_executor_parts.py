"""The executor's parts with no services: no PostgreSQL, RabbitMQ or Ray cluster (SQLite in memory at most).

The outage hold (``bridge/outage.py``), what is in flight (``bridge/in_flight.py``), the clean stop
(``bridge/shutdown.py``), the lease interval (``bridge/leases.py``) and how a body's failure is described
and classified (``bridge/chunk_run.py``). The executor composing them, on the real servers, is tested in
``test_executor.py`` and ``test_reliability.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from bridge.broker import Delivery, Settlement
from bridge.brokers.stub import StubBroker
from bridge.chunk_run import is_infrastructure, is_permanent
from bridge.error_text import describe_error
from bridge.in_flight import InFlight, Work
from bridge.leases import Leases
from bridge.outage import Outage
from bridge.shutdown import shut_down
from service.db.session import SessionFactory, session_factory
from service.jobs.transitions import MAX_ERROR_CHARS, PermanentFailure, Policy


def _answering() -> SessionFactory:
    return session_factory(create_engine("sqlite://"))


def _away(tmp_path: Path) -> SessionFactory:
    """A database that cannot be reached: SQLite in a folder that does not exist."""
    return session_factory(create_engine(f"sqlite:///{tmp_path / 'gone' / 'x.db'}"))


def test_an_outage_holds_until_the_database_answers_and_counts_one_pause(tmp_path: Path) -> None:
    outage: Outage[str] = Outage(_away(tmp_path), probe_interval=0.0)
    assert not outage.down
    outage.hold("a")
    outage.hold("b")
    assert outage.down and outage.held() == 2 and outage.pauses == 1, "one outage, however many it holds"
    assert outage.over() is None and outage.down, "still away: nothing given back"
    outage.factory = _answering()
    assert outage.over() == ["a", "b"], "every held delivery, in the order held"
    assert not outage.down and outage.held() == 0
    outage.hold("c")
    assert outage.pauses == 2, "a new outage"


def test_an_outage_probes_at_its_interval_only(tmp_path: Path) -> None:
    outage: Outage[str] = Outage(_away(tmp_path), probe_interval=0.5)
    outage.hold("a")
    assert outage.over() is None  # probed: away
    outage.factory = _answering()
    assert outage.over() is None, "not probed again before the interval"
    time.sleep(0.55)
    assert outage.over() == ["a"]


def test_a_delivery_is_settled_once() -> None:
    broker, in_flight = StubBroker(), InFlight()
    work = Work(Delivery(7, "TALLY", object(), None))
    in_flight.add(work)
    in_flight.add(work)  # a held delivery added again when it is held: still one
    assert len(in_flight) == 1
    in_flight.settle(broker, work, Settlement.ACK)
    in_flight.settle(broker, work, Settlement.REQUEUE)
    assert broker.settled == [(7, Settlement.ACK)] and len(in_flight) == 0


def test_shutdown_releases_what_is_still_running_and_its_worker_thread_requeues_it(tmp_path: Path) -> None:
    broker, in_flight = StubBroker(), InFlight()
    leases = Leases(_away(tmp_path), "w", Policy())
    stuck = Work(Delivery(1, "TALLY", object(), None))  # not claimed yet: no lease, no Ray task
    in_flight.add(stuck)

    def worker_thread() -> None:  # what a delivery's worker thread does when its task is released
        while not stuck.running.released:
            time.sleep(0.01)
        in_flight.settle(broker, stuck, Settlement.REQUEUE)

    thread = threading.Thread(target=worker_thread, daemon=True)
    thread.start()
    started = time.monotonic()
    released = shut_down(broker, in_flight, leases, grace=0.3)
    thread.join(1)
    assert released == 1 and len(in_flight) == 0
    assert broker.settled == [(1, Settlement.REQUEUE)]
    assert time.monotonic() - started < 3, "no wait for a kill once everything is settled"


def test_leases_are_renewed_only_at_their_interval(tmp_path: Path) -> None:
    asked: list[float] = []
    leases = Leases(_away(tmp_path), "w", Policy(lease_seconds=3))  # every 1 s

    def leased() -> list[int]:
        asked.append(time.monotonic())
        return []  # nothing leased: no transaction

    leases.maybe_renew(leased)
    assert asked == [], "not due at once"
    time.sleep(1.05)
    leases.maybe_renew(leased)
    leases.maybe_renew(leased)
    assert len(asked) == 1


class _RayTaskError(Exception):
    """Like Ray's: a traceback in its text, the body's own exception as ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("Traceback (most recent call last):\n  File ...\n" + repr(cause))
        self.cause = cause


def test_a_failure_is_described_by_the_body_s_own_exception_type_and_first_line() -> None:
    assert describe_error(_RayTaskError(ValueError("bad proof\nsecond line"))) == "ValueError: bad proof"
    assert describe_error(RuntimeError()) == "RuntimeError: "
    assert len(describe_error(ValueError("x" * 10_000))) == MAX_ERROR_CHARS


def test_permanent_and_database_failures_are_told_apart_through_ray_s_wrapper() -> None:
    assert is_permanent(_RayTaskError(PermanentFailure("refused"))) and is_permanent(PermanentFailure())
    assert not is_permanent(_RayTaskError(ValueError("bad")))
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    assert is_infrastructure(_RayTaskError(lost)) and is_infrastructure(lost)
    assert not is_infrastructure(_RayTaskError(ValueError("bad")))
