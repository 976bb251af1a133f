"""The RabbitMQ topology, declared in one place and used by the relay (publisher) and the consumer.

One topic exchange, ``election.exchange``, with one quorum queue per operation. Each work queue
dead-letters into its own queue through ``election.dlx``. What each argument is for, and why
(RabbitMQ 3.10.8, measured: ``docs/field-notes.md#rabbitmq``):

- ``x-queue-type: quorum``: replicated, fsynced before the publisher confirm; fit for votes.
- ``x-max-length: 100000`` with ``x-overflow: reject-publish``: a full queue refuses (the publish is
  nacked, the outbox row stays pending and the relay retries) instead of the default ``drop-head``,
  which silently discards the oldest accepted message. A quorum queue may overshoot the limit by one.
- ``x-dead-letter-strategy: at-least-once``: without it quorum queues dead-letter at most once (a
  dead-lettered message may be lost if the dead-letter queue is unavailable). It requires
  ``reject-publish``, which we use anyway.
- ``x-delivery-limit``: a backstop only. Attempts are counted in PostgreSQL (``chunk_task.attempts``)
  and the bridge dead-letters a chunk itself (``nack(requeue=False)``) when they run out. The broker's
  limit catches a message that crashes every consumer before it can record anything.
- No ``x-message-ttl`` anywhere: a TTL would expire work, and on a queue without a dead-letter
  exchange it discards it. Retry backoff lives in PostgreSQL (``outbox.available_at``), not in
  TTL'd retry queues.

Dead-letter queues have no length limit: they hold what an operator must look at, and a limit
there would again mean dropping something.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.db.models import OperationType

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

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
