"""The bridge: consumes chunk messages and runs each chunk task as a Ray task.

Threads, and why:

- The **connection thread** (the caller of :meth:`Bridge.run`) owns the pika ``BlockingConnection``.
  pika's blocking adapter has no I/O thread of its own: a callback that blocks longer than the
  heartbeat loses the connection. So the message callback only hands the delivery to the pool, and
  every ack or nack goes back through ``connection.add_callback_threadsafe``.
- **Worker threads** (``max_in_flight`` of them): claim the task in PostgreSQL, submit the Ray task,
  wait for it, record a failure, then ask the connection thread to ack. The Ray task commits the
  result and the DONE state itself, so an ack is only ever sent after that commit. The pool size
  bounds the Ray tasks in flight; the channel's prefetch equals it, so the broker never lets this
  bridge hold more unacked messages than it can work on.
- A **lease thread** renews the leases of running tasks, so a live bridge keeps its chunks however
  long they take, and a dead bridge's chunks become free ``lease_seconds`` after it died.

What a message's fate is:

- claimed and the body succeeds (or the task was already DONE, or someone else holds a live lease):
  ack;
- the body raises or its worker dies: ``transitions.fail``; below the limit that writes a delayed
  outbox row and we ack; at the limit the task is FAILED and we ``nack(requeue=False)``, which
  dead-letters the message into the queue's ``.dlq``;
- the database or the broker is unreachable before anything was recorded: ``nack(requeue=True)``
  (after a pause), or nothing at all if the channel is gone, since the broker requeues unacked
  messages of a closed channel itself.

A channel closed by the broker (``consumer_timeout``, a restart) is noticed by polling
``channel.is_open`` (pika raises nothing for it) and the bridge reconnects; acks for deliveries of
the old channel are dropped, their messages come back and find their task DONE.

SIGTERM (:meth:`Bridge.stop`): cancel the consumers, give in-flight chunks ``shutdown_grace``
seconds to finish, release the rest (PENDING again, the attempt not counted, the message requeued)
and return.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pika
import ray
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError

from bridge import metrics, topology
from bridge.db import in_transaction, session_factory
from bridge.tasks import DEFAULT_BODIES, run_chunk
from service.jobs import transitions
from service.jobs.transitions import Claim, Outcome, Policy
from service.settings import Settings

log = logging.getLogger(__name__)

ACK, REQUEUE, DEAD_LETTER = "ack", "requeue", "dead-letter"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def describe_error(exc: BaseException) -> str:
    """A chunk's error for the job status: the exception type and message, no traceback.

    Ray wraps a body's exception in RayTaskError, whose text includes a traceback; its ``cause``
    is the original exception. Our bodies never put key material in an exception message.
    """
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[: transitions.MAX_ERROR_CHARS]


@dataclass(slots=True)
class _Delivery:
    connection: BlockingConnection
    channel: BlockingChannel
    generation: int
    tag: int
    body: bytes
    task_id: int | None = None
    ref: Any = None
    released: bool = False
    settled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Bridge:
    def __init__(
        self,
        settings: Settings,
        *,
        operations: Iterable[str] | None = None,
        bodies: Mapping[str, str] | None = None,
        worker_id: str | None = None,
        policy: Policy | None = None,
        max_retries: int = 0,
        shutdown_grace: float = 30.0,
    ) -> None:
        if not settings.amqp_url:
            raise ValueError("the bridge needs an AMQP URL; use bridge.embedded without one")
        self.amqp_url = settings.amqp_url
        self.database_url = settings.sqlalchemy_url
        self.factory = session_factory(self.database_url)
        self.policy = policy or Policy.from_settings(settings)
        self.max_in_flight = settings.max_in_flight
        self.task_memory = settings.task_memory_mb * 1024 * 1024
        # Ray's own retries are off (max_retries=0, retry_exceptions=False): every retry is counted
        # in PostgreSQL. A worker's death (kill, node loss) or an exception surfaces from ray.get,
        # is recorded by transitions.fail and retried with backoff through the outbox. And Ray's
        # OOM killer retries a killed task forever unless max_retries is 0 (docs/field-notes.md#ray):
        # with 0, a chunk too big for its node ends FAILED with "OutOfMemoryError" instead of looping.
        self.max_retries = max_retries
        self.shutdown_grace = shutdown_grace
        self.queues = [topology.queue_for(op) for op in (operations or DEFAULT_BODIES)]
        self.bodies = {**DEFAULT_BODIES, **(bodies or {})}
        self.worker_id = worker_id or default_worker_id()

        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="bridge-chunk")
        self._inflight: dict[int, _Delivery] = {}  # by delivery id
        self._inflight_lock = threading.Lock()
        self._generation = 0
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._consumer_tags: list[str] = []
        self.ready = threading.Event()  # set once consuming (tests wait on it)

    # -- public -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to finish (thread-safe; what the SIGTERM handler calls)."""
        self._stop.set()

    def run(self) -> None:
        """Consume until :meth:`stop`, reconnecting after broker outages; then shut down cleanly."""
        lease_thread = threading.Thread(target=self._renew_leases, name="bridge-lease", daemon=True)
        lease_thread.start()
        delay = 0.5
        try:
            while not self._stop.is_set():
                try:
                    self._connect()
                    delay = 0.5
                    while not self._stop.is_set():
                        assert self._connection is not None and self._channel is not None
                        self._connection.process_data_events(time_limit=0.5)
                        if not self._channel.is_open:
                            log.warning("channel closed by the broker; reconnecting")
                            break
                except AMQPError as exc:
                    log.warning("broker connection lost (%s); reconnecting", type(exc).__name__)
                self.ready.clear()
                if not self._stop.is_set():
                    self._drop_connection()
                    self._stop.wait(delay)
                    delay = min(delay * 2, 10.0)
            self._shutdown()
        finally:
            self._stop.set()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._drop_connection()

    def install_signal_handlers(self) -> None:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())

    # -- connection thread --------------------------------------------------------------------
    def _connect(self) -> None:
        self._drop_connection()
        params = pika.URLParameters(self.amqp_url)
        params.heartbeat = 30
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        topology.declare(channel)
        channel.basic_qos(prefetch_count=self.max_in_flight)
        self._generation += 1
        self._connection, self._channel = connection, channel
        self._consumer_tags = [
            channel.basic_consume(q.name, on_message_callback=self._on_message) for q in self.queues
        ]
        self.ready.set()
        log.info("bridge %s consuming %s", self.worker_id, ", ".join(q.name for q in self.queues))

    def _drop_connection(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # already broken: closing is best effort
                pass

    def _on_message(self, channel: BlockingChannel, method: Any, _props: Any, body: bytes) -> None:
        assert self._connection is not None
        delivery = _Delivery(self._connection, channel, self._generation, method.delivery_tag, body)
        with self._inflight_lock:
            self._inflight[id(delivery)] = delivery
        self._pool.submit(self._handle, delivery)

    def _settle(self, d: _Delivery, action: str) -> None:
        """Ack or nack ``d`` on the connection thread, once; dropped if its channel is gone."""
        with d.lock:
            if d.settled:
                return
            d.settled = True
        with self._inflight_lock:
            self._inflight.pop(id(d), None)
        self._send_settlement(d, action)

    def _send_settlement(self, d: _Delivery, action: str) -> None:
        def settle() -> None:
            if d.generation != self._generation or not d.channel.is_open:
                return  # the broker requeued it when the channel closed
            try:
                if action == ACK:
                    d.channel.basic_ack(d.tag)
                else:
                    d.channel.basic_nack(d.tag, requeue=(action == REQUEUE))
            except AMQPError:
                log.warning("could not settle a delivery; the broker will redeliver it")

        try:
            d.connection.add_callback_threadsafe(settle)
        except Exception:
            pass  # connection gone: the message is redelivered and finds its task's state

    # -- worker threads -----------------------------------------------------------------------
    def _handle(self, d: _Delivery) -> None:
        try:
            self._settle(d, self._process(d))
        except Exception:
            log.exception("unexpected error handling a delivery; requeueing it")
            time.sleep(1.0)
            self._settle(d, REQUEUE)

    def _process(self, d: _Delivery) -> str:
        if self._stop.is_set():
            return REQUEUE
        try:
            body = topology.parse_body(d.body)
        except ValueError:
            log.error("malformed message dead-lettered")
            return DEAD_LETTER
        task_id: int = body["task_id"]
        try:
            claim = in_transaction(
                self.factory, lambda s: transitions.claim(s, task_id, self.worker_id, self.policy)
            )
        except Exception as exc:
            log.warning("claim of task %s failed (%s); requeueing", task_id, type(exc).__name__)
            time.sleep(1.0)
            return REQUEUE
        if claim is None:
            return ACK  # done, failed, leased elsewhere or backing off: nothing for us
        d.task_id = task_id
        return self._run(d, claim)

    def _run(self, d: _Delivery, claim: Claim) -> str:
        body_path = self.bodies[claim.operation]
        try:
            d.ref = run_chunk.options(
                name=f"chunk:{claim.operation}:{claim.task_id}",
                memory=self.task_memory,
                max_retries=self.max_retries,
                retry_exceptions=False,
            ).remote(body_path, self.database_url, claim)
            outcome = Outcome(ray.get(d.ref))
        except Exception as exc:
            if d.released:
                return REQUEUE  # shut down under it: released already, nothing counted
            return self._record_failure(claim, exc)
        if outcome == Outcome.DONE:
            metrics.chunk_done(claim.operation)
        return ACK

    def _record_failure(self, claim: Claim, exc: BaseException) -> str:
        error = describe_error(exc)
        log.warning("task %s attempt %s failed: %s", claim.task_id, claim.attempt, error)
        try:
            outcome = in_transaction(
                self.factory,
                lambda s: transitions.fail(s, claim.task_id, self.worker_id, error, self.policy),
            )
        except Exception as db_exc:
            # Not recorded: requeue; the next claim counts a new attempt, the lease guards overlap.
            log.warning("could not record failure of task %s (%s)", claim.task_id, type(db_exc).__name__)
            time.sleep(1.0)
            return REQUEUE
        metrics.chunk_failed(claim.operation, final=outcome == Outcome.FAILED)
        return DEAD_LETTER if outcome == Outcome.FAILED else ACK

    # -- leases and shutdown ------------------------------------------------------------------
    def _running_task_ids(self) -> list[int]:
        with self._inflight_lock:
            return [d.task_id for d in self._inflight.values() if d.task_id is not None and not d.released]

    def _renew_leases(self) -> None:
        interval = max(self.policy.lease_seconds / 3, 1.0)
        while not self._stop.wait(interval):
            ids = self._running_task_ids()
            if not ids:
                continue
            try:
                in_transaction(
                    self.factory,
                    lambda s, ids=ids: transitions.renew_leases(s, ids, self.worker_id, self.policy),
                )
            except Exception as exc:
                log.warning("lease renewal failed (%s)", type(exc).__name__)

    def _pump(self, seconds: float) -> None:
        """Let the connection thread send queued acks for ``seconds`` (or just wait if it is gone)."""
        conn = self._connection
        try:
            if conn is not None and conn.is_open:
                conn.process_data_events(time_limit=seconds)
                return
        except AMQPError:
            pass
        time.sleep(seconds)

    def _shutdown(self) -> None:
        channel = self._channel
        if channel is not None and channel.is_open:
            for tag in self._consumer_tags:
                try:
                    channel.basic_cancel(tag)
                except AMQPError:
                    break
        deadline = time.monotonic() + self.shutdown_grace
        while self._pending() and time.monotonic() < deadline:
            self._pump(0.2)
        leftovers = self._snapshot()
        for d in leftovers:
            d.released = True
            if d.task_id is not None:
                try:
                    in_transaction(
                        self.factory, lambda s, t=d.task_id: transitions.release(s, t, self.worker_id)
                    )
                except Exception as exc:
                    log.warning("could not release task %s (%s)", d.task_id, type(exc).__name__)
            if d.ref is not None:
                ray.cancel(d.ref, force=False)
        deadline = time.monotonic() + 5.0
        while self._pending() and time.monotonic() < deadline:
            self._pump(0.2)
        self._pump(0.2)
        log.info("bridge %s stopped (%d chunks released)", self.worker_id, len(leftovers))

    def _pending(self) -> int:
        with self._inflight_lock:
            return len(self._inflight)

    def _snapshot(self) -> list[_Delivery]:
        with self._inflight_lock:
            return list(self._inflight.values())


def main() -> None:
    """``python -m bridge.consumer``: see :mod:`bridge.runner`."""
    import logging as _logging

    from bridge.runner import run_bridge
    from service.settings import get_settings

    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_bridge(get_settings(), with_relay=False, with_reconciler=False)


if __name__ == "__main__":
    main()
