"""The one chunk executor: messages from any broker -> claim in PostgreSQL -> Ray task -> settle.

:class:`Executor` is the composition: it takes deliveries and drives each through the steps
``bridge/chunk_rules.py`` ``decide`` names (give back, claim, run, record a failure, then settle or hold),
each done by the module whose one job it is: ``chunk_db`` (the database steps), ``chunk_run`` (the Ray
task: memory bound, Ray's retries off, time limit, kill), ``outage`` (the hold while the database is
away), ``leases`` (renewal), ``shutdown`` (the clean stop), ``in_flight`` (what is in flight, each settled
once), ``metrics.ExecutorMetrics`` (what each decision counts).

Threads, and why:

- The **main thread** (the caller of :meth:`Executor.run`) owns the broker's connection: it polls for
  deliveries, renews leases, pauses and resumes consumption around a database outage, and on stop runs
  the shutdown. (pika's blocking adapter must be driven from the thread that connected; the other brokers
  do not care.)
- **Worker threads** (one per delivery, at most ``max_in_flight`` at once: the main thread takes no more,
  and the broker's prefetch equals it) run a delivery's steps, then settle it. The Ray task commits the
  result and the DONE state itself, so an ack is only ever sent after that commit. They are daemons:
  shutdown has released (or settled) every delivery before it returns, so one still blocked in a call (a
  database that stopped answering) must not keep the process from exiting, as a ``ThreadPoolExecutor``'s
  thread would.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping

from bridge import chunk_rules as rules
from bridge.broker import Broker, BrokerLost, Delivery, Idle, Settlement
from bridge.chunk_db import ChunkDb
from bridge.chunk_run import ChunkRun
from bridge.in_flight import InFlight, Work
from bridge.leases import Leases
from bridge.metrics import ExecutorMetrics
from bridge.outage import Outage
from bridge.shutdown import shut_down
from bridge.tasks import DEFAULT_BODIES
from service.db.session import SessionFactory
from service.jobs.transitions import Policy
from service.settings import Settings

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Executor:
    def __init__(
        self,
        factory: SessionFactory,
        broker: Broker,
        settings: Settings,
        *,
        operations: Iterable[str] | None = None,
        bodies: Mapping[str, str] | None = None,
        worker_id: str | None = None,
        policy: Policy | None = None,
        max_retries: int = 0,
        shutdown_grace: float = 30.0,
        poll_interval: float = 0.5,
        db_probe_interval: float = 2.0,
    ) -> None:
        self.factory = factory
        self.broker = broker
        self.policy = policy or Policy.from_settings(settings)
        self.max_in_flight = settings.max_in_flight
        self.shutdown_grace = shutdown_grace
        self.poll_interval = poll_interval
        # Queues by operation; "<operation>:<variant>" keys name bodies of the same operation's queue.
        self.operations = list(operations or [op for op in DEFAULT_BODIES if ":" not in op])
        self.worker_id = worker_id or default_worker_id()
        self.reconnects = 0

        self.db = ChunkDb(factory, self.worker_id, self.policy)
        self.runner = ChunkRun(
            bodies={**DEFAULT_BODIES, **(bodies or {})},
            database_url=settings.sqlalchemy_url,
            task_memory=settings.task_memory_mb * 1024 * 1024,
            time_limit=settings.chunk_time_limit_seconds,
            max_retries=max_retries,
        )
        self.outage: Outage[Work] = Outage(factory, db_probe_interval)
        self.leases = Leases(factory, self.worker_id, self.policy)
        self.metrics = ExecutorMetrics(self.worker_id)
        self.in_flight = InFlight()
        self._stop = threading.Event()
        self._consuming = False
        self.ready = threading.Event()  # set once consuming (tests wait on it)

    @property
    def pauses(self) -> int:
        """How many times the database went away (tests and logs)."""
        return self.outage.pauses

    # -- public -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe; what the SIGTERM handler of
        ``cli/worker.py`` ``run_until_signalled`` calls)."""
        self._stop.set()

    def run(self) -> None:
        """Work until :meth:`stop`, reconnecting after broker outages; then shut down cleanly."""
        self._run(lambda: self._stop.is_set())

    def run_until_idle(self, timeout: float | None = None) -> None:
        """Work until the broker has no message left (due or backing off) and nothing is in flight.
        Only for brokers that can tell (``Idle``: the embedded outbox, the stub)."""
        broker = self.broker
        if not isinstance(broker, Idle):
            raise TypeError(f"{type(broker).__name__} cannot tell when all work is done")
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop.clear()  # may run again after an earlier run ended (tests, the demo's phases)

        def done() -> bool:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the executor did not become idle within {timeout} s")
            return self._stop.is_set() or (len(self.in_flight) == 0 and broker.idle())

        self._run(done)

    # -- main thread --------------------------------------------------------------------------
    def _run(self, finished: Callable[[], bool]) -> None:
        delay = 0.5
        try:
            while not finished():
                try:
                    self.broker.connect()
                    self._consuming = False
                    if not self.outage.down:
                        self._consume()
                    delay = 0.5
                    while not finished():
                        if self.outage.down:
                            self._while_database_down()
                            continue
                        room = self.max_in_flight - len(self.in_flight)
                        for delivery in self.broker.poll(self.poll_interval, max(room, 0)):
                            self._start(delivery)
                        self.leases.maybe_renew(self._leased)
                        self.metrics.tick(len(self.in_flight))
                except BrokerLost as exc:
                    log.warning("broker connection lost (%s); reconnecting", exc)
                    self.reconnects += 1
                self.ready.clear()
                if not finished():
                    self.broker.close()
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10.0)
            released = shut_down(self.broker, self.in_flight, self.leases, self.shutdown_grace)
            log.info("executor %s stopped (%d chunks released)", self.worker_id, released)
        finally:
            self._stop.set()
            self.broker.close()

    def _consume(self) -> None:
        self.broker.consume(self.operations, self.max_in_flight)
        self._consuming = True
        self.ready.set()

    def _while_database_down(self) -> None:
        """Stop consuming, hold what still arrives, and when the database answers run the held again."""
        if self._consuming:
            self.broker.cancel()
            self._consuming = False
            self.ready.clear()
            log.warning("database unreachable: consumption paused, %d delivery(ies) held", self.outage.held())
        for delivery in self.broker.poll(self.poll_interval, 0):  # pumps settlements; holds stragglers
            self._hold(Work(delivery))
        held = self.outage.over()
        if held is None:
            return
        log.warning("database reachable again: running %d held delivery(ies), consuming", len(held))
        for work in held:
            self._spawn(work)
        self._consume()

    def _leased(self) -> list[int]:
        """The tasks whose leases are ours to renew."""
        works = self.in_flight.snapshot()
        return [w.lease.task_id for w in works if w.lease is not None and not w.running.released]

    def _start(self, delivery: Delivery) -> None:
        work = Work(delivery)
        self.in_flight.add(work)
        if self._stop.is_set():
            self.in_flight.settle(self.broker, work, Settlement.REQUEUE)
            return
        self._spawn(work)

    def _spawn(self, work: Work) -> None:
        threading.Thread(target=self._handle, args=(work,), name="chunk", daemon=True).start()

    def _hold(self, work: Work) -> None:
        self.in_flight.add(work)  # a delivery that arrived during the outage is in flight from now
        self.outage.hold(work)

    # -- worker threads: each step is done by its module, which reports what it found -------------
    def _handle(self, work: Work) -> None:
        try:
            how = self._process(work)
        except Exception:
            log.exception("unexpected error handling a delivery; requeueing it")
            time.sleep(1.0)
            how = Settlement.REQUEUE
        if how is None:
            self._hold(work)
        else:
            self.in_flight.settle(self.broker, work, how)

    def _process(self, work: Work) -> Settlement | None:
        """Run the delivery's steps to its settlement; None: hold it until the database answers."""
        event: rules.Event = rules.Start(
            readable=work.delivery.task_id is not None, stopping=self._stop.is_set()
        )
        while True:
            decision = rules.decide(work.chunk, event)
            work.chunk = decision.chunk
            self.metrics.counted(work.operation, decision.count)
            task_id = work.delivery.task_id
            match decision.step:
                case rules.Step.SETTLE:
                    if task_id is None and decision.settlement == Settlement.DEAD_LETTER:
                        log.error("malformed message dead-lettered")
                    if decision.pause:
                        time.sleep(1.0)
                    return decision.settlement
                case rules.Step.HOLD:
                    return None
                case rules.Step.GIVE_BACK:
                    assert task_id is not None
                    event = self.db.give_back(task_id)
                case rules.Step.CLAIM:
                    assert task_id is not None
                    event = self.db.claim(task_id, work.leased)
                case rules.Step.RUN:
                    assert work.lease is not None
                    event = self.runner.run(work.lease, work.running)
                case rules.Step.RECORD_FAILURE:
                    assert work.lease is not None and work.chunk.failure is not None
                    event = self.db.record_failure(work.lease, work.chunk.failure)
