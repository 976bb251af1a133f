"""The deliveries an executor has taken and not yet settled: each one's :class:`Work`, and the set of them.

Its one job: know what is in flight, so that the main thread takes no more deliveries than there is room
for, renews the right leases and, at shutdown, releases the rest; and settle each delivery exactly once.

Threads: any. A delivery's worker thread changes its own :class:`Work` (its state, lease, Ray task); the
main thread reads the set (:meth:`InFlight.snapshot`) and, at shutdown, marks the work released. Adding,
removing and counting go through one lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from bridge import chunk_rules as rules
from bridge.broker import Broker, Delivery, Settlement
from bridge.chunk_run import Running
from service.jobs.transitions import Claim


@dataclass(slots=True, eq=False)
class Work:
    delivery: Delivery
    chunk: rules.Chunk = field(default_factory=rules.Chunk)  # its state in chunk_rules' machine
    lease: Claim | None = None  # the claim that leased its task: renewed, released at shutdown, failed
    running: Running = field(default_factory=Running)  # its Ray task

    def leased(self, lease: Claim) -> None:
        """Its claim leased the task (``ChunkDb.claim``)."""
        self.lease = lease

    @property
    def operation(self) -> str:
        """What its metrics are counted under."""
        return self.lease.operation if self.lease else str(self.delivery.operation)


class InFlight:
    def __init__(self) -> None:
        self._works: dict[int, Work] = {}  # by id(work)
        self._lock = threading.Lock()

    def add(self, work: Work) -> None:
        with self._lock:
            self._works[id(work)] = work

    def settle(self, broker: Broker, work: Work, how: Settlement) -> None:
        """Settle once; then the work is no longer in flight."""
        with self._lock:
            if self._works.pop(id(work), None) is None:
                return
        broker.settle(work.delivery, how)

    def __len__(self) -> int:
        with self._lock:
            return len(self._works)

    def snapshot(self) -> list[Work]:
        with self._lock:
            return list(self._works.values())
