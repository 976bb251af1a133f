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

What a delivery's fate is:

- claimed and the body succeeds (or the task was already DONE, or someone else holds a live lease, or it
  is backing off): ACK;
- the body raises or its worker dies, or it runs past ``chunk_time_limit_seconds`` (its worker is then
  killed): ``transitions.fail``; below the limit that writes a delayed outbox message and we ACK; at the
  limit the task is FAILED and we DEAD_LETTER it;
- unreadable: DEAD_LETTER;
- its lease was taken over at the last attempt (its worker died every time): the task is FAILED,
  DEAD_LETTER.

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
from typing import Any

import ray
from sqlalchemy import text

from bridge import metrics
from bridge.broker import Broker, BrokerLost, Delivery, Idle, Settlement
from bridge.tasks import DEFAULT_BODIES, run_chunk
from service.db.session import in_transaction, is_disconnect, session_factory, without_password
from service.jobs import transitions
from service.jobs.transitions import Claim, Outcome, Policy
from service.settings import Settings

log = logging.getLogger(__name__)


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
    task_id: int | None = None
    ref: Any = None
    released: bool = False
    settled: bool = False
    # What to do first when the work runs again after a database outage.
    give_back: int | None = None  # release this task (its body lost the database: the attempt is not its)
    failure: tuple[Claim, str, bool] | None = None  # record this failure (recording it lost the database)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Released(Exception):
    """Shutdown released this work while its task ran: the message is requeued, nothing recorded."""


class TimeLimitExceeded(Exception):
    """The chunk ran past ``chunk_time_limit_seconds``: its worker was killed, the attempt fails."""


class _Held(Exception):
    """The database is unreachable: keep the delivery unsettled until it answers again."""


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
        settings: Settings,
        broker: Broker,
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
        self.broker = broker
        self.database_url = settings.sqlalchemy_url
        self.factory = session_factory(self.database_url)
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
        """Ask :meth:`run` to finish (thread-safe; what the SIGTERM handler calls)."""
        self._stop.set()

    def run(self) -> None:
        """Work until :meth:`stop`, reconnecting after broker outages; then shut down cleanly."""
        self._run(lambda: self._stop.is_set())

    def run_until_idle(self, timeout: float | None = None) -> None:
        """Work until the broker has no message left (due or backing off) and nothing is in flight.
        Only for brokers that can tell (``Idle``: the embedded outbox, the stub)."""
        if not hasattr(self.broker, "idle"):
            raise TypeError(f"{type(self.broker).__name__} cannot tell when all work is done")
        broker: Idle = self.broker  # type: ignore[assignment]
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop.clear()  # may run again after an earlier run ended (tests, the demo's phases)

        def done() -> bool:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the executor did not become idle within {timeout} s")
            return self._stop.is_set() or (self._pending() == 0 and broker.idle())

        self._run(done)

    def install_signal_handlers(self) -> None:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())

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
        if time.monotonic() - self._last_probe < self.db_probe_interval:
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
        with work.lock:
            if work.settled:
                return
            work.settled = True
        with self._inflight_lock:
            self._inflight.pop(id(work), None)
        self.broker.settle(work.delivery, how)

    # -- worker threads -----------------------------------------------------------------------
    def _handle(self, work: _Work) -> None:
        try:
            how = self._process(work)
        except _Held:
            self._hold(work)
            return
        except Exception:
            log.exception("unexpected error handling a delivery; requeueing it")
            time.sleep(1.0)
            how = Settlement.REQUEUE
        self._settle(work, how)

    def _db(self, fn: Callable[[Any], Any]) -> Any:
        """A transaction; a lost database holds the work (``_Held``) instead of failing it."""
        try:
            return in_transaction(self.factory, fn)
        except Exception as exc:
            if is_disconnect(exc):
                raise _Held from exc
            raise

    def _process(self, work: _Work) -> Settlement:
        if self._stop.is_set():
            return Settlement.REQUEUE
        task_id = work.delivery.task_id
        if task_id is None:
            log.error("malformed message dead-lettered")
            return Settlement.DEAD_LETTER
        if work.failure is not None:
            claim, error, permanent = work.failure
            return self._record_failure(work, claim, error, permanent)
        if work.give_back is not None:
            give_back = work.give_back
            self._db(lambda s: transitions.release(s, give_back, self.worker_id))
            work.give_back = None
        try:
            claim = self._db(lambda s: transitions.claim(s, task_id, self.worker_id, self.policy))
        except _Held:
            # The claim's commit may have landed before the connection went (its answer did not): give
            # it back first when the delivery runs again, or the retry would find our own lease and
            # drop the work, or find it expired and count a second attempt.
            work.give_back = task_id
            raise
        except Exception as exc:
            log.warning("claim of task %s failed (%s); requeueing", task_id, type(exc).__name__)
            time.sleep(1.0)
            return Settlement.REQUEUE
        if claim is None:
            return Settlement.ACK  # done, failed, leased elsewhere or backing off: nothing for us
        if claim == Outcome.FAILED:
            log.warning("task %s FAILED: its worker died at every attempt", task_id)
            metrics.chunk_failed(str(work.delivery.operation), final=True)
            return Settlement.DEAD_LETTER
        if not isinstance(claim, Claim):
            return Settlement.ACK
        work.task_id = task_id
        return self._run_claim(work, claim)

    def _run_claim(self, work: _Work, claim: Claim) -> Settlement:
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
            if work.released:
                return Settlement.REQUEUE  # shut down under it: released already, nothing counted
            if _is_infrastructure(exc):
                # The body lost the database: not the chunk's fault. Its attempt is given back when the
                # database returns, and the chunk runs again then.
                log.warning("task %s lost the database (%s); held", claim.task_id, describe_error(exc))
                work.give_back = claim.task_id
                raise _Held from exc
            error = describe_error(exc)
            log.warning("task %s attempt %s failed: %s", claim.task_id, claim.attempt, error)
            return self._record_failure(work, claim, error, permanent=_is_permanent(exc))
        if outcome == Outcome.DONE:
            metrics.chunk_done(claim.operation)
            log.info("%s task %s of job %s done", claim.operation, claim.task_id, claim.job_id)
        return Settlement.ACK

    def _result(self, work: _Work) -> Any:
        """The task's result. A task still running when shutdown released it is left to Ray's cancel;
        one past its time limit is killed (its transaction, if any, rolls back) and fails its attempt,
        so a hung call costs an attempt instead of holding its job, and a CPU, for ever."""
        deadline = time.monotonic() + self.time_limit if self.time_limit else None
        while True:
            ready, _ = ray.wait([work.ref], timeout=1.0)
            if ready:
                return ray.get(work.ref)
            if work.released:
                raise _Released
            if deadline is not None and time.monotonic() > deadline:
                ray.cancel(work.ref, force=True)
                raise TimeLimitExceeded(
                    f"still running after its time limit of {self.time_limit:g} s; its worker was killed"
                )

    def _record_failure(self, work: _Work, claim: Claim, error: str, permanent: bool = False) -> Settlement:
        try:
            outcome = self._db(
                lambda s: transitions.fail(
                    s, claim.task_id, self.worker_id, error, self.policy, permanent=permanent
                )
            )
        except _Held:
            work.failure = (claim, error, permanent)  # recorded when the database answers again
            raise
        except Exception as db_exc:
            # Not recorded: requeue; the next claim counts a new attempt, the lease guards overlap.
            log.warning("could not record failure of task %s (%s)", claim.task_id, type(db_exc).__name__)
            time.sleep(1.0)
            return Settlement.REQUEUE
        work.failure = None
        metrics.chunk_failed(claim.operation, final=outcome == Outcome.FAILED)
        if outcome == Outcome.FAILED:
            log.warning(
                "task %s of job %s FAILED after %s attempt(s)", claim.task_id, claim.job_id, claim.attempt
            )
        elif outcome == Outcome.RETRY:
            log.info("task %s of job %s will be retried", claim.task_id, claim.job_id)
        return Settlement.DEAD_LETTER if outcome == Outcome.FAILED else Settlement.ACK

    # -- leases and shutdown ------------------------------------------------------------------
    def _pending(self) -> int:
        with self._inflight_lock:
            return len(self._inflight)

    def _snapshot(self) -> list[_Work]:
        with self._inflight_lock:
            return list(self._inflight.values())

    def _maybe_report(self) -> None:
        if time.monotonic() - self._last_report >= 5.0:
            self._last_report = time.monotonic()
            metrics.in_flight(self.worker_id, self._pending())

    def _maybe_renew(self) -> None:
        if time.monotonic() - self._last_renew < max(self.policy.lease_seconds / 3, 1.0):
            return
        self._last_renew = time.monotonic()
        ids = [w.task_id for w in self._snapshot() if w.task_id is not None and not w.released]
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
            if w.task_id is not None:
                self._release(w.task_id)
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
