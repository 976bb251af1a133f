"""The reconciler: no chunk task waits forever.

PostgreSQL says which tasks still need doing. A task can be left without a message when a message
is lost between commit and publish, when a bridge dies holding a lease (the redelivered message
found the lease still live and was acked), or when a message was dead-lettered by the broker's own
delivery limit. Every ``interval`` the reconciler writes a fresh outbox row for each task that is
PENDING past its backoff, or RUNNING with an expired lease, and that has no unsent outbox row and
no message published within ``stale_after`` (see ``transitions.reclaimable``). Duplicates that
slip through are harmless: claims and completions are idempotent.

Each round also erases key escrows that outlived their job (``service.elections.escrow.erase_expired``):
a FAILED decryption job keeps its escrow for a re-drive for ``escrow_retention_hours``, no longer.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy.orm import Session

from service.db.models import ElectionJob, TaskState
from service.db.session import SessionFactory, in_transaction
from service.jobs import transitions
from service.jobs.transitions import Policy

log = logging.getLogger(__name__)


def reconcile_once(factory: SessionFactory, *, stale_after: timedelta, policy: Policy | None = None) -> int:
    """Write outbox rows for stuck tasks (a task whose worker died at its last attempt is FAILED
    instead); returns how many were republished."""
    policy = policy or Policy()

    def work(session: Session) -> int:
        tasks = transitions.reclaimable(session, stale_after=stale_after)
        republished = 0
        for task in tasks:
            if task.state == TaskState.RUNNING and task.attempts >= policy.max_attempts:
                transitions.fail_abandoned(session, task.id, policy)
                continue
            job = session.get(ElectionJob, task.job_id)
            assert job is not None
            transitions.enqueue(session, task, job)
            republished += 1
        return republished

    n = in_transaction(factory, work)
    if n:
        log.info("republished %d stuck chunk task(s)", n)
    return n


def sweep_escrows(factory: SessionFactory, *, retention: timedelta) -> int:
    """Erase the key escrows of jobs that ended (FAILED ones once ``retention`` has passed)."""
    from service.elections.escrow import erase_expired

    n = in_transaction(factory, lambda s: erase_expired(s, retention))
    if n:
        log.info("erased %d expired key escrow(s)", n)
    return n


class Reconciler:
    def __init__(
        self,
        factory: SessionFactory,
        *,
        interval: float = 30.0,
        stale_after: timedelta,
        escrow_retention: timedelta = timedelta(hours=24),
        policy: Policy | None = None,
    ) -> None:
        self.factory = factory
        self.policy = policy or Policy()
        self.interval = interval
        self.stale_after = stale_after
        self.escrow_retention = escrow_retention
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                reconcile_once(self.factory, stale_after=self.stale_after, policy=self.policy)
                sweep_escrows(self.factory, retention=self.escrow_retention)
            except Exception as exc:
                log.warning("reconcile round failed (%s)", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
