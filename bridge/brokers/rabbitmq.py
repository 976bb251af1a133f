"""RabbitMQ: the topology, the consuming broker and the relay's publisher. The only module that imports pika.

The topology, declared in one place: one topic exchange, ``election.exchange``, with one quorum queue
per operation, each dead-lettering into its own queue through ``election.dlx``. What each argument is
for, and why (RabbitMQ 3.10.8, measured: ``docs/field-notes.md#rabbitmq``):

- ``x-queue-type: quorum``: replicated, fsynced before the publisher confirm; fit for votes.
- ``x-max-length: 100000`` with ``x-overflow: reject-publish``: a full queue refuses (the publish is
  nacked, the outbox row stays pending and the relay retries) instead of the default ``drop-head``,
  which silently discards the oldest accepted message. A quorum queue may overshoot the limit by one.
- ``x-dead-letter-strategy: at-least-once``: without it quorum queues dead-letter at most once (a
  dead-lettered message may be lost if the dead-letter queue is unavailable). It requires
  ``reject-publish``, which we use anyway.
- ``x-delivery-limit``: a backstop only. Attempts are counted in PostgreSQL (``chunk_task.attempts``)
  and the executor dead-letters a chunk itself (``nack(requeue=False)``) when they run out. The
  broker's limit catches a message that crashes every consumer before it can record anything.
- No ``x-message-ttl`` anywhere: a TTL would expire work, and on a queue without a dead-letter
  exchange it discards it. Retry backoff lives in PostgreSQL (``outbox.available_at``).

Dead-letter queues have no length limit: they hold what an operator must look at, and a limit there
would again mean dropping something.

The consumer (``RabbitMQBroker``): pika's ``BlockingConnection`` has no I/O thread of its own, and a
callback that blocks longer than the heartbeat loses the connection; so deliveries are only collected by
the connection's own thread (``poll``) and every ack or nack from another thread goes back through
``connection.add_callback_threadsafe``. A channel the broker closed (``consumer_timeout``, a restart) is
noticed by ``channel.is_open`` (pika raises nothing for it): ``poll`` raises BrokerLost and the executor
reconnects; settlements of the old channel are dropped, their messages come back and find their task's
state in PostgreSQL.

The publisher (``RabbitMQPublisher``): a confirming channel, ``mandatory`` publishes, so a full queue
(a nack) or an unbound routing key (a basic.return) is a refusal the relay sees, never a silent loss; the
confirms of a whole batch are awaited together (its own I/O thread, see the class).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError

from bridge.broker import BrokerLost, Delivery, Published, QueueDepth, Settlement
from service.db.models import OperationType
from service.jobs.outbox import Message

log = logging.getLogger(__name__)


EXCHANGE = "election.exchange"
DEAD_LETTER_EXCHANGE = "election.dlx"
MAX_LENGTH = 100_000
# Far above max_attempts: it only fires when a message keeps killing consumers before they can count.
DELIVERY_LIMIT = 20


@dataclass(frozen=True, slots=True)
class WorkQueue:
    operation: OperationType
    name: str
    routing_key: str

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.name}.dlq"


WORK_QUEUES: tuple[WorkQueue, ...] = (
    WorkQueue(OperationType.TALLY, "tally.queue", "election.tally"),
    WorkQueue(OperationType.PARTIAL_DECRYPTION, "decryption.queue", "election.decryption"),
    WorkQueue(
        OperationType.COMPENSATED_DECRYPTION,
        "compensated.decryption.queue",
        "election.compensated.decryption",
    ),
    WorkQueue(OperationType.COMBINE_DECRYPTION, "combine.queue", "election.combine"),
    WorkQueue(OperationType.VERIFY, "verify.queue", "election.verify"),
)
_BY_OPERATION = {q.operation.value: q for q in WORK_QUEUES}
_BY_NAME = {q.name: q for q in WORK_QUEUES}


def queue_for(operation: str) -> WorkQueue:
    return _BY_OPERATION[str(operation)]


def queue_named(name: str) -> WorkQueue:
    return _BY_NAME[name]


def routing_key_for(operation: str) -> str:
    return queue_for(operation).routing_key


def message_body(job_id: Any, task_id: int, operation: str) -> dict[str, Any]:
    """The whole content of a chunk message: ids only, never ballots, keys or credentials."""
    return {"job_id": str(job_id), "task_id": int(task_id), "operation": str(operation)}


MESSAGE_KEYS = frozenset({"job_id", "task_id", "operation"})


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a chunk message, refusing anything but the three ids (ValueError)."""
    body = json.loads(raw)
    if not isinstance(body, dict) or set(body) != MESSAGE_KEYS:
        raise ValueError("not a chunk message")
    if not isinstance(body["task_id"], int) or body["operation"] not in _BY_OPERATION:
        raise ValueError("not a chunk message")
    return body


def work_queue_arguments(queue: WorkQueue) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-max-length": MAX_LENGTH,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": queue.routing_key,
        "x-dead-letter-strategy": "at-least-once",
        "x-delivery-limit": DELIVERY_LIMIT,
    }


def dead_letter_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum"}


def declare(channel: BlockingChannel) -> None:
    """Declare exchanges, queues and bindings. Idempotent: same names, same arguments every time."""
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="direct", durable=True)
    for q in WORK_QUEUES:
        channel.queue_declare(q.name, durable=True, arguments=work_queue_arguments(q))
        channel.queue_bind(q.name, EXCHANGE, routing_key=q.routing_key)
        channel.queue_declare(q.dead_letter_queue, durable=True, arguments=dead_letter_queue_arguments())
        channel.queue_bind(q.dead_letter_queue, DEAD_LETTER_EXCHANGE, routing_key=q.routing_key)


# ---------------------------------------------------------------------------------------- the consumer


@dataclass(frozen=True, slots=True)
class _Handle:
    connection: BlockingConnection
    channel: BlockingChannel
    generation: int
    tag: int


class RabbitMQBroker:
    """The executor's broker over RabbitMQ (see the module docstring for the threading rules)."""

    def __init__(self, url: str, *, heartbeat: int = 30) -> None:
        self.url = url
        self.heartbeat = heartbeat
        self.generation = 0  # bumped by every connect: settlements of an older channel are dropped
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._arrived: list[Delivery] = []
        self._tags: list[str] = []

    def connect(self) -> None:
        self.close()
        try:
            params = pika.URLParameters(self.url)
            params.heartbeat = self.heartbeat
            connection = pika.BlockingConnection(params)
            channel = connection.channel()
            declare(channel)
        except AMQPError as exc:
            raise BrokerLost(f"cannot connect to RabbitMQ ({type(exc).__name__})") from exc
        self.generation += 1
        self._connection, self._channel = connection, channel

    def consume(self, operations: Sequence[str], prefetch: int) -> None:
        channel = self._require_channel()
        try:
            # The prefetch bounds unacked messages: the broker never lets this executor hold more than
            # it can work on, whatever the queue's depth.
            channel.basic_qos(prefetch_count=prefetch)
            self._tags = [
                channel.basic_consume(queue_for(op).name, on_message_callback=self._on_message)
                for op in operations
            ]
        except AMQPError as exc:
            raise BrokerLost(f"cannot consume ({type(exc).__name__})") from exc

    def _on_message(self, channel: BlockingChannel, method: Any, _props: Any, body: bytes) -> None:
        assert self._connection is not None
        handle = _Handle(self._connection, channel, self.generation, method.delivery_tag)
        try:
            parsed = parse_body(body)
        except ValueError:
            self._arrived.append(Delivery(None, None, handle))
            return
        self._arrived.append(Delivery(parsed["task_id"], parsed["operation"], handle, parsed["job_id"]))

    def poll(self, timeout: float, limit: int) -> list[Delivery]:
        connection, channel = self._connection, self._channel
        if connection is None or channel is None or not connection.is_open:
            raise BrokerLost("not connected")
        try:
            connection.process_data_events(time_limit=timeout)
        except AMQPError as exc:
            raise BrokerLost(f"connection lost ({type(exc).__name__})") from exc
        arrived, self._arrived = self._arrived, []
        if not channel.is_open:
            # Closed by the broker (consumer_timeout, a restart): what arrived on it is requeued by the
            # broker itself, so it is not handed out.
            raise BrokerLost("channel closed by the broker")
        return arrived

    def settle(self, delivery: Delivery, how: Settlement) -> None:
        h: _Handle = delivery.handle

        def send() -> None:
            if h.generation != self.generation or not h.channel.is_open:
                return  # the broker requeued it when the channel closed
            try:
                if how == Settlement.ACK:
                    h.channel.basic_ack(h.tag)
                else:
                    h.channel.basic_nack(h.tag, requeue=(how == Settlement.REQUEUE))
            except AMQPError:
                log.warning("could not settle a delivery; the broker will redeliver it")

        try:
            h.connection.add_callback_threadsafe(send)
        except Exception:  # connection gone: the message is redelivered and finds its task's state
            pass

    def cancel(self) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        for tag in self._tags:
            try:
                channel.basic_cancel(tag)
            except AMQPError:
                break
        self._tags = []

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # already broken: closing is best effort
                pass

    def _require_channel(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            raise BrokerLost("not connected")
        return self._channel


# ---------------------------------------------------------------------------------------- the publisher


class _Batch:
    """One ``publish`` call's messages in flight: delivery tag -> outbox id, until confirmed."""

    def __init__(self) -> None:
        self.pending: dict[int, int] = {}
        self.returned: set[int] = set()
        self.sent: list[int] = []
        self.refused: list[int] = []
        self.lost: str | None = None
        self.done = threading.Event()

    def settle(self, tag: int, multiple: bool, ack: bool) -> None:
        tags = [t for t in self.pending if t <= tag] if multiple else [tag]
        for t in tags:
            outbox_id = self.pending.pop(t, None)
            if outbox_id is None:
                continue
            # A mandatory message nothing is bound for comes back (basic.return) before its ack.
            (self.sent if ack and outbox_id not in self.returned else self.refused).append(outbox_id)
        if not self.pending:
            self.done.set()

    def fail(self, reason: str) -> None:
        self.lost = reason
        self.done.set()

    def published(self) -> Published:
        return Published(list(self.sent), list(self.refused))


class RabbitMQPublisher:
    """Publishes outbox messages with confirms (the relay's side), a whole batch in flight at once.

    On pika's blocking channel every confirmed publish is a round trip (591 messages/s measured on a
    quorum queue here, ``benchmarks/bench_relay.py``). This publisher writes the whole batch, then waits
    once for the broker's confirms (which RabbitMQ sends as ``multiple`` acks): a
    ``SelectConnection`` whose I/O loop runs in the publisher's own thread, which also answers
    heartbeats between batches. ``publish`` hands a batch to that thread and waits; a connection lost
    mid-batch raises BrokerLost with what was confirmed before.
    """

    def __init__(self, url: str, *, confirm_timeout: float = 30.0, heartbeat: int = 30) -> None:
        self.url = url
        self.confirm_timeout = confirm_timeout
        self.heartbeat = heartbeat
        self._lock = threading.Lock()
        self._connection: pika.SelectConnection | None = None
        self._channel: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: str | None = None
        self._batch: _Batch | None = None
        self._next_tag = 0

    # -- the I/O thread's side

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(
            ack_nack_callback=self._on_confirm, callback=lambda _frame: self._opened(channel)
        )

    def _opened(self, channel: Any) -> None:
        self._channel, self._next_tag = channel, 0
        self._ready.set()

    def _lose(self, reason: str) -> None:
        self._failure = reason
        self._channel = None
        if self._batch is not None:
            self._batch.fail(reason)
        self._ready.set()

    def _on_open_error(self, _connection: Any, exc: BaseException) -> None:
        self._lose(f"cannot connect to RabbitMQ ({type(exc).__name__})")
        self._stop_loop()

    def _on_connection_closed(self, _connection: Any, exc: BaseException) -> None:
        self._lose(f"connection lost ({type(exc).__name__})")
        self._stop_loop()

    def _on_channel_closed(self, _channel: Any, exc: BaseException) -> None:
        self._lose(f"channel closed ({type(exc).__name__})")
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.close()

    def _stop_loop(self) -> None:
        connection = self._connection
        if connection is not None:
            connection.ioloop.stop()

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        batch, message_id = self._batch, str(properties.message_id or "")
        if batch is not None and message_id.startswith("outbox-"):
            batch.returned.add(int(message_id.removeprefix("outbox-")))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if self._batch is not None:
            self._batch.settle(method.delivery_tag, method.multiple, isinstance(method, pika.spec.Basic.Ack))

    def _send(self, batch: _Batch, messages: Sequence[Message]) -> None:
        channel = self._channel
        if channel is None:
            batch.fail(self._failure or "not connected")
            return
        try:
            for m in messages:
                self._next_tag += 1
                batch.pending[self._next_tag] = m.id
                channel.basic_publish(
                    EXCHANGE,
                    routing_key_for(m.operation),
                    json.dumps(
                        message_body(m.job_id, m.task_id, m.operation), separators=(",", ":")
                    ).encode(),
                    pika.BasicProperties(
                        content_type="application/json",
                        delivery_mode=pika.DeliveryMode.Persistent,
                        message_id=f"outbox-{m.id}",
                    ),
                    mandatory=True,
                )
        except AMQPError as exc:
            batch.fail(f"publish failed ({type(exc).__name__})")

    # -- the caller's side

    def connect(self) -> None:
        """Connect (and declare the topology) now rather than at the first publish."""
        with self._lock:
            self._ensure_connected()

    def _ensure_connected(self) -> None:
        if self._channel is not None and self._thread is not None and self._thread.is_alive():
            return
        self.close()
        # Declared over a short blocking connection: the topology is the same for every client.
        try:
            with pika.BlockingConnection(pika.URLParameters(self.url)) as blocking:
                declare(blocking.channel())
        except AMQPError as exc:
            raise BrokerLost(f"cannot connect to RabbitMQ ({type(exc).__name__})") from exc
        params = pika.URLParameters(self.url)
        params.heartbeat = self.heartbeat
        self._ready.clear()
        self._failure = None
        self._connection = pika.SelectConnection(
            params,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_connection_closed,
        )
        self._thread = threading.Thread(
            target=self._connection.ioloop.start, name="amqp-publisher", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self.confirm_timeout) or self._channel is None:
            reason = self._failure or "timed out connecting to RabbitMQ"
            self.close()
            raise BrokerLost(reason)

    def publish(self, messages: Sequence[Message]) -> Published:
        if not messages:
            return Published([], [])
        with self._lock:
            self._ensure_connected()
            assert self._connection is not None
            batch = _Batch()
            self._batch = batch
            try:
                self._connection.ioloop.add_callback_threadsafe(lambda: self._send(batch, messages))
                confirmed = batch.done.wait(self.confirm_timeout)
            finally:
                self._batch = None
            if batch.lost is not None or not confirmed:
                self.close()
                raise BrokerLost(f"{batch.lost or 'no confirms in time'} while publishing", batch.published())
            return batch.published()

    def close(self) -> None:
        connection, thread = self._connection, self._thread
        self._channel = None
        if connection is not None and thread is not None and thread.is_alive():

            def shut() -> None:
                if connection.is_open:
                    connection.close()
                else:
                    connection.ioloop.stop()

            try:
                connection.ioloop.add_callback_threadsafe(shut)
            except Exception:  # the loop is already gone
                pass
            thread.join(5)
        self._connection, self._thread = None, None


class RabbitMQQueueStats:
    """``QueueStats`` over RabbitMQ without the management plugin: a passive ``queue_declare`` of every
    work queue and its dead-letter queue on a short connection of its own (the API process holds no
    broker connection). A queue not declared yet reads as empty."""

    def __init__(self, url: str, *, timeout: float = 3.0) -> None:
        self.url = url
        self.timeout = timeout

    def queue_depths(self) -> list[QueueDepth]:
        params = pika.URLParameters(self.url)
        params.socket_timeout = self.timeout
        params.blocked_connection_timeout = self.timeout
        params.connection_attempts = 1
        try:
            connection = pika.BlockingConnection(params)
        except AMQPError as exc:
            raise BrokerLost(f"cannot connect to RabbitMQ ({type(exc).__name__})") from exc
        try:
            out = []
            for q in WORK_QUEUES:
                ready, consumers = self._declare(connection, q.name)
                dead, _ = self._declare(connection, q.dead_letter_queue)
                out.append(QueueDepth(q.operation.value, q.name, ready, consumers, dead))
            return out
        finally:
            try:
                connection.close()
            except AMQPError:
                pass

    @staticmethod
    def _declare(connection: BlockingConnection, name: str) -> tuple[int, int]:
        from pika.exceptions import ChannelClosedByBroker

        channel = connection.channel()
        try:
            ok = channel.queue_declare(name, passive=True).method
        except ChannelClosedByBroker:  # 404: not declared yet (no bridge has started)
            return 0, 0
        channel.close()
        return int(ok.message_count), int(ok.consumer_count)
