"""The database-outage hold: deliveries kept unsettled while the database is away, run again when it answers.

Its one job: while the database is unreachable (a claim, a failure record or the body's own writes lost
the connection: ``chunk_rules`` says *hold*), nothing is settled and nothing is counted. The held
deliveries are kept here; the executor stops consuming (``broker.cancel``: the messages stay unacked, not
requeued), :meth:`Outage.over` probes the database every ``probe_interval`` seconds, and when it answers
hands the held deliveries back to run again (each first gives back the attempt its claim or body may have
taken, ``transitions.release``, or records the failure it could not) and the executor consumes again. So
an outage costs no attempt, adds nothing to the broker's delivery count and sends nothing to a
dead-letter queue, which holds only chunks that failed their attempts.

Threads: :meth:`Outage.hold` from any thread (a delivery's worker thread, or the main thread for a
delivery that arrives during the outage); :meth:`Outage.over` from the main thread only.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

from sqlalchemy import text

from bridge import chunk_rules as rules
from service.db.session import SessionFactory, in_transaction

W = TypeVar("W")


class Outage(Generic[W]):
    def __init__(self, factory: SessionFactory, probe_interval: float) -> None:
        self.factory = factory
        self.probe_interval = probe_interval
        self.pauses = 0  # how many times the database went away (tests and logs)
        self._held: list[W] = []
        self._down = threading.Event()
        self._lock = threading.Lock()
        self._last_probe = 0.0

    @property
    def down(self) -> bool:
        return self._down.is_set()

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def hold(self, work: W) -> None:
        """Keep ``work`` unsettled until the database answers; the first hold of an outage starts it."""
        with self._lock:
            self._held.append(work)
            if not self._down.is_set():
                self.pauses += 1
            self._down.set()

    def over(self) -> list[W] | None:
        """Probe the database (at most every ``probe_interval`` s): if it answers, the outage is over and
        this is what was held, to run again; None while it is still away (or not yet time to probe)."""
        if not rules.due(time.monotonic(), self._last_probe, self.probe_interval):
            return None
        self._last_probe = time.monotonic()
        try:
            in_transaction(self.factory, lambda s: s.execute(text("SELECT 1")), attempts=1)
        except Exception:
            return None
        with self._lock:
            held, self._held = self._held, []
            self._down.clear()
        return held
