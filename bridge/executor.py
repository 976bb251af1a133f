"""The one chunk executor: messages from any broker -> claim in PostgreSQL -> Ray task -> settle.

Threads, and why:

- The **main thread** (the caller of :meth:`Executor.run`) owns the broker's connection: it polls for
  deliveries, renews leases, and on stop runs the shutdown. (pika's blocking adapter must be driven from
  the thread that connected; the other brokers do not care.)
- **Worker threads** (one per delivery, at most ``max_in_flight`` at once): claim the task in
  PostgreSQL, submit the Ray task, wait for it, record a failure, then settle the delivery. The Ray task
  commits the result and the DONE state itself, so an ack is only ever sent after that commit. The main
  thread takes no more deliveries than there is room for, and the broker's prefetch equals it, so this
  executor never holds more messages than it can work on. They are daemon threads: shutdown has released
  (or settled) every delivery before it returns, so one still blocked in a call (a database that stopped
  answering) must not keep the process from exiting, as a ``ThreadPoolExecutor``'s thread would.

What is done with a delivery, step by step (give back, claim, run, record a failure, then settle or
hold), and what each settlement means, is decided by ``bridge/chunk_rules.py`` ``decide``: this module
does the steps and reports what each found.

While the database is unreachable (a claim, a failure record or the body's own writes lose the
connection), nothing is settled and nothing is counted: the delivery is *held*, the executor stops
consuming (``broker.cancel``), probes the database every ``db_probe_interval`` seconds, and when it answers
runs the held deliveries again (a body that lost the database gives its attempt back first:
``transitions.release``) and consumes again. So an outage costs no attempt, adds nothing to the broker's
delivery count (the messages stay unacked, not requeued) and sends nothing to a dead-letter queue, which
holds only chunks that failed their attempts.

Ray's own retries are off (``max_retries=0``, ``retry_exceptions=False``): every retry is counted in
PostgreSQL. A worker's death (kill, node loss) or an exception surfaces from ``ray.get``, is recorded by
``transitions.fail`` and retried with backoff through the outbox. And Ray's OOM killer retries a killed
task forever unless ``max_retries`` is 0 (``docs/field-notes.md#ray``): with 0, a chunk too big for its
node ends FAILED with "OutOfMemoryError" instead of looping.

Stop (SIGTERM, :meth:`Executor.stop`): cancel consumption, give in-flight chunks ``shutdown_grace``
seconds, release the rest (PENDING again, the attempt not counted, the message requeued), cancel their
Ray tasks (killing, 5 s later, the worker of one that did not stop) and return.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import ray
from sqlalchemy import text

from bridge import chunk_rules as rules
from bridge import metrics
from bridge.broker import Broker, BrokerLost, Delivery, Idle, Settlement
from bridge.tasks import DEFAULT_BODIES, run_chunk
from service.db.session import SessionFactory, in_transaction, is_disconnect, without_password
from service.jobs import transitions
from service.jobs.transitions import Claim, Claimed, ClaimResult, Outcome, Policy
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def describe_error(exc: BaseException) -> str:
    """A chunk's error for the job status: the exception type and message, no traceback.

    Ray wraps a body's exception in RayTaskError, whose text includes a traceback; its ``cause`` is the
    original exception. Our bodies never put key material in an exception message.
    """
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[: transitions.MAX_ERROR_CHARS]


@dataclass(slots=True, eq=False)
class _Work:
    delivery: Delivery
    chunk: rules.Chunk = field(default_factory=rules.Chunk)  # its state in chunk_rules' machine
    lease: Claim | None = None  # the claim that leased its task: renewed, released at shutdown, failed
    ref: Any = None  # its Ray task
    released: bool = False  # shutdown released its task (set by the main thread)


class _Released(Exception):
    """Shutdown released this work while its task ran: the message is requeued, nothing recorded."""


class TimeLimitExceeded(Exception):
    """The chunk ran past ``chunk_time_limit_seconds``: its worker was killed, the attempt fails."""


def _is_permanent(exc: BaseException) -> bool:
    """A body's failure no retry can change (``transitions.PermanentFailure``): FAILED at once."""
    cause = getattr(exc, "cause", None)
    return isinstance(cause if isinstance(cause, BaseException) else exc, transitions.PermanentFailure)


def _is_infrastructure(exc: BaseException) -> bool:
    """A body that failed because the database went away (not because of its chunk)."""
    cause = getattr(exc, "cause", None)
    return is_disconnect(cause if isinstance(cause, BaseException) else exc)


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
        self.database_url = settings.sqlalchemy_url  # the Ray task's, without its password
        self.policy = policy or Policy.from_settings(settings)
        self.max_in_flight = settings.max_in_flight
        self.task_memory = settings.task_memory_mb * 1024 * 1024
        self.time_limit = settings.chunk_time_limit_seconds
        self.max_retries = max_retries
        self.shutdown_grace = shutdown_grace
        self.poll_interval = poll_interval
        self.db_probe_interval = db_probe_interval
        # Queues by operation; "<operation>:<variant>" keys name bodies of the same operation's queue.
        self.operations = list(operations or [op for op in DEFAULT_BODIES if ":" not in op])
        self.bodies = {**DEFAULT_BODIES, **(bodies or {})}
        self.worker_id = worker_id or default_worker_id()
        self.reconnects = 0

        self._stop = threading.Event()
        self._inflight: dict[int, _Work] = {}  # by id(work)
        self._inflight_lock = threading.Lock()
        self._last_renew = time.monotonic()
        self._last_report = 0.0
        self._held: list[_Work] = []
        self._db_down = threading.Event()
        self._consuming = False
        self._last_probe = 0.0
        self.pauses = 0  # how many times the database went away (tests and logs)
        self.ready = threading.Event()  # set once consuming (tests wait on it)

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
            return self._stop.is_set() or (self._pending() == 0 and broker.idle())

        self._run(done)

    # -- main thread --------------------------------------------------------------------------
    def _run(self, finished: Callable[[], bool]) -> None:
        delay = 0.5
        try:
            while not finished():
                try:
                    self.broker.connect()
                    self._consuming = False
                    if not self._db_down.is_set():
                        self._consume()
                    delay = 0.5
                    while not finished():
                        if self._db_down.is_set():
                            self._while_database_down()
                            continue
                        room = self.max_in_flight - self._pending()
                        for delivery in self.broker.poll(self.poll_interval, max(room, 0)):
                            self._start(delivery)
                        self._maybe_renew()
                        self._maybe_report()
                except BrokerLost as exc:
                    log.warning("broker connection lost (%s); reconnecting", exc)
                    self.reconnects += 1
                self.ready.clear()
                if not finished():
                    self.broker.close()
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10.0)
            self._shutdown()
        finally:
            self._stop.set()
            self.broker.close()

    def _consume(self) -> None:
        self.broker.consume(self.operations, self.max_in_flight)
        self._consuming = True
        self.ready.set()

    def _while_database_down(self) -> None:
        """Main thread, while the database is away: stop consuming, hold what arrives, probe."""
        if self._consuming:
            self.broker.cancel()
            self._consuming = False
            self.ready.clear()
            log.warning("database unreachable: consumption paused, %d delivery(ies) held", len(self._held))
        for delivery in self.broker.poll(self.poll_interval, 0):  # pumps settlements; holds stragglers
            self._hold(_Work(delivery))
        if not rules.due(time.monotonic(), self._last_probe, self.db_probe_interval):
            return
        self._last_probe = time.monotonic()
        try:
            in_transaction(self.factory, lambda s: s.execute(text("SELECT 1")), attempts=1)
        except Exception:
            return
        with self._inflight_lock:
            held, self._held = self._held, []
        self._db_down.clear()
        log.warning("database reachable again: running %d held delivery(ies), consuming", len(held))
        for work in held:
            self._spawn(work)
        self._consume()

    def _hold(self, work: _Work) -> None:
        with self._inflight_lock:
            self._inflight[id(work)] = work
            self._held.append(work)
            if not self._db_down.is_set():
                self.pauses += 1
            self._db_down.set()

    def _start(self, delivery: Delivery) -> None:
        work = _Work(delivery)
        with self._inflight_lock:
            self._inflight[id(work)] = work
        if self._stop.is_set():
            self._settle(work, Settlement.REQUEUE)
            return
        self._spawn(work)

    def _spawn(self, work: _Work) -> None:
        threading.Thread(target=self._handle, args=(work,), name="chunk", daemon=True).start()

    def _settle(self, work: _Work, how: Settlement) -> None:
        """Settle once; then the work is no longer in flight."""
        with self._inflight_lock:
            if self._inflight.pop(id(work), None) is None:
                return
        self.broker.settle(work.delivery, how)

    # -- worker threads: each step does what chunk_rules.decide says and reports what it found -------
    def _handle(self, work: _Work) -> None:
        try:
            how = self._process(work)
        except Exception:
            log.exception("unexpected error handling a delivery; requeueing it")
            time.sleep(1.0)
            how = Settlement.REQUEUE
        if how is None:
            self._hold(work)
        else:
            self._settle(work, how)

    def _process(self, work: _Work) -> Settlement | None:
        """Run the delivery's steps to its settlement; None: hold it until the database answers."""
        event: rules.Event = rules.Start(
            readable=work.delivery.task_id is not None, stopping=self._stop.is_set()
        )
        while True:
            decision = rules.decide(work.chunk, event)
            work.chunk = decision.chunk
            self._count(work, decision.count)
            match decision.step:
                case rules.Step.SETTLE:
                    if work.delivery.task_id is None and decision.settlement == Settlement.DEAD_LETTER:
                        log.error("malformed message dead-lettered")
                    if decision.pause:
                        time.sleep(1.0)
                    return decision.settlement
                case rules.Step.HOLD:
                    return None
                case rules.Step.GIVE_BACK:
                    event = self._give_back(work)
                case rules.Step.CLAIM:
                    event = self._claim(work)
                case rules.Step.RUN:
                    event = self._run_claim(work)
                case rules.Step.RECORD_FAILURE:
                    event = self._record_failure(work)

    def _db(self, what: str, fn: Callable[[Any], T], then: Callable[[T], rules.Event]) -> rules.Event:
        """A step's transaction, and what it found: ``then`` of its result, or the database's failure."""
        try:
            result = in_transaction(self.factory, fn)
        except Exception as exc:
            if is_disconnect(exc):
                log.warning("%s lost the database; held", what)
                return rules.DatabaseLost()
            log.warning("%s failed (%s); requeueing", what, type(exc).__name__)
            return rules.DatabaseError()
        return then(result)

    def _give_back(self, work: _Work) -> rules.Event:
        task_id = work.delivery.task_id
        assert task_id is not None
        release = partial(transitions.release, task_id=task_id, worker=self.worker_id)
        return self._db(f"giving back task {task_id}", release, lambda _: rules.GivenBack())

    def _claim(self, work: _Work) -> rules.Event:
        task_id = work.delivery.task_id
        assert task_id is not None

        def found(result: ClaimResult) -> rules.Event:
            if result.lease is not None:
                work.lease = result.lease
                return rules.Leased()
            if result.status == Claimed.ABANDONED:
                log.warning("task %s FAILED: its worker died at every attempt", task_id)
                return rules.Abandoned()
            return rules.NothingToDo()  # done, failed, leased elsewhere or backing off: nothing for us

        claim = partial(transitions.claim, task_id=task_id, worker=self.worker_id, policy=self.policy)
        return self._db(f"claim of task {task_id}", claim, found)

    def _run_claim(self, work: _Work) -> rules.Event:
        claim = work.lease
        assert claim is not None
        body_path = self.bodies.get(claim.body_key) or self.bodies[claim.operation]
        try:
            work.ref = run_chunk.options(
                name=f"chunk:{claim.operation}:{claim.task_id}",
                memory=self.task_memory,
                max_retries=self.max_retries,
                retry_exceptions=False,
            ).remote(body_path, without_password(self.database_url), claim)
            outcome = Outcome(self._result(work))
        except Exception as exc:
            failure = rules.Failure(describe_error(exc), permanent=_is_permanent(exc))
            if work.released:
                return rules.BodyFailed(failure, released=True)
            if _is_infrastructure(exc):
                log.warning("task %s lost the database (%s); held", claim.task_id, failure.error)
                return rules.BodyFailed(failure, lost_database=True)
            log.warning("task %s attempt %s failed: %s", claim.task_id, claim.attempt, failure.error)
            return rules.BodyFailed(failure)
        if outcome == Outcome.DONE:
            log.info("%s task %s of job %s done", claim.operation, claim.task_id, claim.job_id)
        return rules.Ran(done=outcome == Outcome.DONE)

    def _result(self, work: _Work) -> Any:
        """The task's result. A task still running when shutdown released it is left to Ray's cancel;
        one past its time limit is killed (its transaction, if any, rolls back) and fails its attempt,
        so a hung call costs an attempt instead of holding its job, and a CPU, for ever."""
        ends_by = rules.deadline(time.monotonic(), self.time_limit)
        while True:
            ready, _ = ray.wait([work.ref], timeout=1.0)
            if ready:
                return ray.get(work.ref)
            match rules.while_running(time.monotonic(), ends_by, work.released):
                case rules.Waiting.RELEASED:
                    raise _Released
                case rules.Waiting.TIMED_OUT:
                    ray.cancel(work.ref, force=True)
                    raise TimeLimitExceeded(
                        f"still running after its time limit of {self.time_limit:g} s; its worker was killed"
                    )

    def _record_failure(self, work: _Work) -> rules.Event:
        claim, failure = work.lease, work.chunk.failure
        assert claim is not None and failure is not None

        def recorded(outcome: Outcome) -> rules.Event:
            if outcome == Outcome.FAILED:
                log.warning(
                    "task %s of job %s FAILED after %s attempt(s)", claim.task_id, claim.job_id, claim.attempt
                )
            elif outcome == Outcome.RETRY:
                log.info("task %s of job %s will be retried", claim.task_id, claim.job_id)
            return rules.Recorded(final=outcome == Outcome.FAILED)

        fail = partial(
            transitions.fail,
            task_id=claim.task_id,
            worker=self.worker_id,
            error=failure.error,
            policy=self.policy,
            permanent=failure.permanent,
        )
        return self._db(f"recording the failure of task {claim.task_id}", fail, recorded)

    def _count(self, work: _Work, count: rules.Count | None) -> None:
        if count is None:
            return
        operation = work.lease.operation if work.lease else str(work.delivery.operation)
        if count == rules.Count.DONE:
            metrics.chunk_done(operation)
        else:
            metrics.chunk_failed(operation, final=count == rules.Count.FAILED_FINAL)

    # -- leases and shutdown ------------------------------------------------------------------
    def _pending(self) -> int:
        with self._inflight_lock:
            return len(self._inflight)

    def _snapshot(self) -> list[_Work]:
        with self._inflight_lock:
            return list(self._inflight.values())

    def _maybe_report(self) -> None:
        if rules.due(time.monotonic(), self._last_report, 5.0):
            self._last_report = time.monotonic()
            metrics.in_flight(self.worker_id, self._pending())

    def _maybe_renew(self) -> None:
        if not rules.due(time.monotonic(), self._last_renew, rules.renew_every(self.policy.lease_seconds)):
            return
        self._last_renew = time.monotonic()
        ids = [w.lease.task_id for w in self._snapshot() if w.lease is not None and not w.released]
        if not ids:
            return
        try:
            in_transaction(
                self.factory, lambda s: transitions.renew_leases(s, ids, self.worker_id, self.policy)
            )
        except Exception as exc:
            log.warning("lease renewal failed (%s)", type(exc).__name__)

    def _drain(self, seconds: float) -> None:
        """Let the broker send queued settlements for ``seconds``; settle at once what arrives now."""
        try:
            for delivery in self.broker.poll(seconds, 0):
                self.broker.settle(delivery, Settlement.REQUEUE)
        except BrokerLost:
            time.sleep(seconds)

    def _release(self, task_id: int) -> None:
        try:
            in_transaction(self.factory, lambda s: transitions.release(s, task_id, self.worker_id))
        except Exception as exc:
            log.warning("could not release task %s (%s)", task_id, type(exc).__name__)

    def _shutdown(self) -> None:
        try:
            self.broker.cancel()
        except BrokerLost:
            pass
        deadline = time.monotonic() + self.shutdown_grace
        while self._pending() and time.monotonic() < deadline:
            self._drain(0.2)
        leftovers = self._snapshot()
        for w in leftovers:
            w.released = True
            if w.lease is not None:
                self._release(w.lease.task_id)
            if w.ref is not None:
                ray.cancel(w.ref, force=False)
        deadline = time.monotonic() + 5.0
        while self._pending() and time.monotonic() < deadline:
            self._drain(0.2)
        for w in leftovers:
            # Released and requeued: a task that did not stop when asked (blocked in a call) must not
            # keep a CPU of the cluster for ever, so its worker process is killed (its transaction, if
            # any, rolls back).
            if w.ref is not None and not ray.wait([w.ref], timeout=0)[0]:
                ray.cancel(w.ref, force=True)
        self._drain(0.2)
        log.info("executor %s stopped (%d chunks released)", self.worker_id, len(leftovers))
