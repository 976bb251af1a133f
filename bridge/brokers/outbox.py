"""The database's outbox as the broker, for the embedded default: no broker process at all.

Due outbox rows are taken straight from the table (``service.jobs.outbox.take_due``) and marked sent:
that is their delivery, in one short transaction (nothing slow runs inside it, so unlike the RabbitMQ
relay it needs no reservation; it skips rows a relay has reserved, and counts them in the window).
Everything after it (the claim, the Ray task, failures, retries with backoff through new outbox rows,
FAILED chunks, re-drive) is the same executor as behind RabbitMQ. What is missing is only a
dead-letter queue: a FAILED chunk is visible in its job. One executor per database: SQLite has one
writer and no ``SKIP LOCKED`` (on PostgreSQL several would share the rows correctly).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bridge.broker import BrokerLost, Delivery, QueueDepth, Settlement
from service.db.session import SessionFactory, in_transaction
from service.jobs import outbox


class OutboxBroker:
    def __init__(self, factory: SessionFactory, window: int | None = None) -> None:
        self.factory = factory
        self.window = window  # fair share (outbox.take_due): taking in round-robin order is most of it here
        self.operations: list[str] | None = None

    def connect(self) -> None:
        pass

    def consume(self, operations: Sequence[str], prefetch: int) -> None:
        self.operations = list(operations)

    def poll(self, timeout: float, limit: int) -> list[Delivery]:
        taken: list[Delivery] = []
        if limit > 0:

            def take(session: Session) -> list[Delivery]:
                rows = outbox.take_due(session, limit, operations=self.operations, window=self.window)
                outbox.mark_sent(session, rows)  # delivered: to this executor, in place of a queue
                return [Delivery(r.task_id, r.operation, r.id, r.job_id) for r in rows]

            try:
                taken = in_transaction(self.factory, take)
            except DBAPIError as exc:
                raise BrokerLost(f"the database is unreachable ({type(exc).__name__})") from exc
        if not taken:
            time.sleep(timeout)
        return taken

    def settle(self, delivery: Delivery, how: Settlement) -> None:
        # ACK: nothing left to do (the row is sent). DEAD_LETTER: the task is FAILED in its job, the
        # only dead-letter store there is here. REQUEUE: a new message, due now.
        if how != Settlement.REQUEUE or delivery.task_id is None or delivery.job_id is None:
            return
        task_id, job_id, operation = delivery.task_id, delivery.job_id, str(delivery.operation)
        in_transaction(self.factory, lambda s: outbox.enqueue(s, task_id, job_id, operation))

    def idle(self) -> bool:
        """No message left, due or waiting for its backoff."""
        return in_transaction(self.factory, outbox.unsent) == 0

    def queue_depths(self) -> list[QueueDepth]:
        """``QueueStats`` of the embedded default: the outbox is the queue, so its unsent rows per
        operation are what waits (no consumer count, no dead-letter queue: a FAILED chunk stays in its
        job)."""
        from service.db.models import OperationType
        from service.jobs.console import outbox_by_operation

        backlog = in_transaction(self.factory, outbox_by_operation)
        return [QueueDepth(op.value, "outbox", backlog.get(op.value, 0), None, None) for op in OperationType]

    def cancel(self) -> None:
        self.operations = []

    def close(self) -> None:
        pass
