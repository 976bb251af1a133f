"""The executor's leases on the chunks it runs: renewed at their interval, released at shutdown.

Its one job: keep a live executor's chunks its own (``transitions.renew_leases`` every ``lease_seconds / 3``,
at most once a second: ``chunk_rules.renew_every``), so that only a dead executor's chunks are taken over
when their lease runs out, and give a chunk back (``transitions.release``: PENDING again, the attempt not
counted) when shutdown stops waiting for it. A failure of either is logged, never raised: a renewal is
tried again at the next interval, and a lease not released runs out.

Threads: the main thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from bridge import chunk_rules as rules
from service.db.session import SessionFactory, in_transaction
from service.jobs import transitions
from service.jobs.transitions import Policy

log = logging.getLogger("bridge.executor")  # the executor's events keep one logger name


class Leases:
    def __init__(self, factory: SessionFactory, worker_id: str, policy: Policy) -> None:
        self.factory = factory
        self.worker_id = worker_id
        self.policy = policy
        self.every = rules.renew_every(policy.lease_seconds)
        self._last_renew = time.monotonic()

    def maybe_renew(self, leased: Callable[[], list[int]]) -> None:
        """Renew the leases of the tasks ``leased()`` names, if it is time."""
        if not rules.due(time.monotonic(), self._last_renew, self.every):
            return
        self._last_renew = time.monotonic()
        ids = leased()
        if not ids:
            return
        try:
            in_transaction(
                self.factory, lambda s: transitions.renew_leases(s, ids, self.worker_id, self.policy)
            )
        except Exception as exc:
            log.warning("lease renewal failed (%s)", type(exc).__name__)

    def release(self, task_id: int) -> None:
        try:
            in_transaction(self.factory, lambda s: transitions.release(s, task_id, self.worker_id))
        except Exception as exc:
            log.warning("could not release task %s (%s)", task_id, type(exc).__name__)
