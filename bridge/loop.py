"""The loop every housekeeping worker runs (reconciler, callback sender, escrow sweeper).

``run()`` calls ``run_once()`` every ``interval`` seconds until ``stop()`` (from any thread). A round that
raises is logged by its type and the loop goes on: a database that is away for a while costs rounds, not
the worker. Each worker is its own small class with one job; one process may run several (``cli/worker.py``).
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Loop:
    """A periodic worker: subclasses do one round in ``run_once`` (returning how much it did)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()

    def run_once(self) -> int:
        raise NotImplementedError

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception as exc:
                # The type only: a driver's message may quote a URL or a row.
                log.warning("%s round failed (%s)", type(self).__name__, type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
