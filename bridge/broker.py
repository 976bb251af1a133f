"""What the executor needs of a message broker, and what the relay needs of a publisher.

Implementations sit side by side in ``bridge/brokers/`` (as Dramatiq keeps ``broker.py`` beside
``brokers/rabbitmq.py`` and ``brokers/stub.py``):

- ``brokers/rabbitmq.py``: RabbitMQ, the production broker (and the only module that imports pika);
- ``brokers/outbox.py``: the database's outbox itself, for the embedded default (no broker process);
- ``brokers/stub.py``: in memory, for fast tests of the executor's logic (not a test of RabbitMQ).

A message names one chunk task by id (``Delivery.task_id``); the truth about that task is in the
database, so a broker may deliver a message twice, late, or after a restart: the executor's claim in
PostgreSQL decides what, if anything, to do with it.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: the executor's rules (bridge/chunk_rules.py) stay free of SQLAlchemy
    from service.jobs.outbox import Message


class Settlement(enum.StrEnum):
    ACK = "ack"  # done with it (the result committed, or there was nothing to do)
    REQUEUE = "requeue"  # not handled here; deliver it again (to anyone)
    DEAD_LETTER = "dead-letter"  # its task is FAILED (or the message is unreadable): park it for an operator


class BrokerLost(RuntimeError):
    """The connection to the broker is gone; unsettled deliveries will come back on their own.

    Raised by a publisher mid-batch, it carries what was confirmed before the loss (``published``)."""

    def __init__(self, message: str, published: Published | None = None) -> None:
        super().__init__(message)
        self.published = published


@dataclass(slots=True)
class Delivery:
    """One message handed to the executor. ``task_id`` is None when the message could not be read."""

    task_id: int | None
    operation: str | None
    handle: Any  # the broker's own reference, for ``settle``
    job_id: Any = None


class Broker(Protocol):
    """The consuming side. ``poll`` runs on the executor's main thread (the one that connected);
    ``settle`` may be called from any thread."""

    def connect(self) -> None:
        """(Re)connect; raises BrokerLost when the broker cannot be reached."""

    def consume(self, operations: Sequence[str], prefetch: int) -> None:
        """Start delivering messages of these operations, at most ``prefetch`` unsettled at once."""

    def poll(self, timeout: float, limit: int) -> list[Delivery]:
        """What arrived within ``timeout`` (at most ``limit`` where the broker can choose); BrokerLost when
        the connection or channel is gone."""

    def settle(self, delivery: Delivery, how: Settlement) -> None:
        """Ack, requeue or dead-letter one delivery, once; a no-op when its connection is gone."""

    def cancel(self) -> None:
        """Stop receiving new deliveries (shutting down); unsettled ones can still be settled."""

    def close(self) -> None: ...


@runtime_checkable
class Idle(Protocol):
    """A broker that can tell there is no work left anywhere (the embedded outbox, the stub):
    ``isinstance(broker, Idle)``."""

    def idle(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Published:
    sent: list[int]  # outbox row ids the broker confirmed
    refused: list[int]  # row ids it refused (queue full, unroutable): to be tried again later


class Publisher(Protocol):
    """The relay's side: publish outbox messages, each confirmed or refused by the broker."""

    def publish(self, messages: Sequence[Message]) -> Published:
        """Raises BrokerLost when the connection drops, with what was confirmed until then."""

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """One work queue as the broker sees it. ``ready``: waiting for a consumer; ``consumers``: bridges
    reading it; ``dead_letters``: messages in its dead-letter queue. None where a broker cannot tell (AMQP's
    passive declare reports no unacked count: the console shows the chunk tasks RUNNING instead)."""

    operation: str
    queue: str
    ready: int | None
    consumers: int | None
    dead_letters: int | None
    unacked: int | None = None


class QueueStats(Protocol):
    """Read-only: the depth of every work queue (the operator console's queues page)."""

    def queue_depths(self) -> list[QueueDepth]: ...
