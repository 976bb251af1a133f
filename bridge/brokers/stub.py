"""An in-memory broker for fast tests of the executor's logic (claims, failures, settlements, shutdown).

Not a test of RabbitMQ: tests of RabbitMQ's behaviour run against the real broker.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Sequence

from bridge.broker import BrokerLost, Delivery, Settlement


class StubBroker:
    def __init__(self) -> None:
        self._queue: deque[Delivery] = deque()
        self._lock = threading.Lock()
        self.settled: list[tuple[int | None, Settlement]] = []
        self.unsettled = 0
        self.down = False  # a test sets it: poll and connect raise BrokerLost
        self.operations: list[str] = []

    def publish(
        self, task_id: int | None, operation: str | None = "TALLY", job_id: uuid.UUID | None = None
    ) -> None:
        with self._lock:
            self._queue.append(Delivery(task_id, operation, object(), job_id))

    def connect(self) -> None:
        if self.down:
            raise BrokerLost("stub broker is down")

    def consume(self, operations: Sequence[str], prefetch: int) -> None:
        self.operations = list(operations)

    def poll(self, timeout: float, limit: int) -> list[Delivery]:
        if self.down:
            raise BrokerLost("stub broker is down")
        with self._lock:
            n = min(limit, len(self._queue))
            out = [self._queue.popleft() for _ in range(n)]
            self.unsettled += len(out)
        if not out:
            threading.Event().wait(timeout)
        return out

    def settle(self, delivery: Delivery, how: Settlement) -> None:
        with self._lock:
            self.settled.append((delivery.task_id, how))
            self.unsettled -= 1
            if how == Settlement.REQUEUE:
                self._queue.append(delivery)

    def idle(self) -> bool:
        with self._lock:
            return not self._queue and self.unsettled == 0

    def cancel(self) -> None:
        self.operations = []

    def close(self) -> None:
        pass
