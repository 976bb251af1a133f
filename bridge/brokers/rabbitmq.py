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
(``NackError``) or an unbound routing key (``UnroutableError``) is a refusal the relay sees, never a
silent loss.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError, NackError, UnroutableError

from bridge.broker import BrokerLost, Delivery, Published, Settlement
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


class RabbitMQPublisher:
    """Publishes outbox messages with confirms (the relay's side)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def _ensure_channel(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        try:
            self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = self._connection.channel()
            declare(channel)
            channel.confirm_delivery()
        except AMQPError as exc:
            self.close()
            raise BrokerLost(f"cannot connect to RabbitMQ ({type(exc).__name__})") from exc
        self._channel = channel
        return channel

    def publish(self, messages: Sequence[Message]) -> Published:
        sent: list[int] = []
        refused: list[int] = []
        channel = self._ensure_channel()
        try:
            for m in messages:
                try:
                    # On a confirming channel basic_publish blocks until the broker confirms this
                    # message, raising NackError (queue full) or UnroutableError (nothing bound).
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
                except (NackError, UnroutableError):
                    refused.append(m.id)
                    continue
                sent.append(m.id)
        except AMQPError as exc:
            self.close()
            raise BrokerLost(
                f"connection lost while publishing ({type(exc).__name__})", Published(sent, refused)
            ) from exc
        return Published(sent, refused)

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except AMQPError:
                pass
