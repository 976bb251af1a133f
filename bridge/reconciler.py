"""The reconciler: no chunk task waits forever.

PostgreSQL says which tasks still need doing. A task can be left without a message when a message
is lost between commit and publish, when a bridge dies holding a lease (the redelivered message
found the lease still live and was acked), or when a message was dead-lettered by the broker's own
delivery limit. Every ``interval`` the reconciler writes a fresh outbox row for each task that is
PENDING past its backoff, or RUNNING with an expired lease, and that has no unsent outbox row and
no message published within ``stale_after`` (see ``transitions.reclaimable``). Duplicates that
slip through are harmless: claims and completions are idempotent.

With ``stuck_after``, each round records on every stuck job (no chunk ended for that long,
``service.jobs.status.is_stuck``) what it found and did: its tasks by state, its unsent messages, how
many it republished (``reconciler_note``, shown in the job's status).

Completion callbacks are sent by ``bridge.callback_sender`` and expired key escrows erased by
``bridge.escrow_sweeper``: other jobs, other loops (``cli/worker.py`` runs them side by side).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from bridge.loop import Loop
from service.db.models import ChunkTask, ElectionJob, Outbox, TaskState
from service.db.session import SessionFactory, in_transaction
from service.jobs import transitions
from service.jobs.clock import db_now
from service.jobs.status import last_progress, stuck_jobs
from service.jobs.transitions import Policy

log = logging.getLogger(__name__)


def reconcile_once(
    factory: SessionFactory,
    *,
    stale_after: timedelta,
    policy: Policy | None = None,
    stuck_after: timedelta | None = None,
) -> int:
    """Write outbox rows for stuck tasks (a task whose worker died at its last attempt is FAILED
    instead), and with ``stuck_after`` a note on each stuck job; returns how many were republished."""
    policy = policy or Policy()

    def work(session: Session) -> int:
        tasks = transitions.reclaimable(session, stale_after=stale_after)
        republished: Counter[uuid.UUID] = Counter()
        failed: Counter[uuid.UUID] = Counter()
        for task in tasks:
            if task.state == TaskState.RUNNING and task.attempts >= policy.max_attempts:
                transitions.fail_abandoned(session, task.id, policy)
                failed[task.job_id] += 1
                continue
            job = session.get(ElectionJob, task.job_id)
            assert job is not None
            transitions.enqueue(session, task, job)
            republished[task.job_id] += 1
        if stuck_after is not None:
            _note_stuck(session, stuck_after, republished, failed)
        return sum(republished.values())

    n = in_transaction(factory, work)
    if n:
        log.info("republished %d stuck chunk task(s)", n)
    return n


def _note_stuck(
    session: Session,
    stuck_after: timedelta,
    republished: Counter[uuid.UUID],
    failed: Counter[uuid.UUID],
) -> None:
    jobs = stuck_jobs(session, stuck_after)
    if not jobs:
        return
    ids = [j.job_id for j in jobs]
    now = db_now(session)
    states: dict[uuid.UUID, Counter[str]] = {j: Counter() for j in ids}
    expired_lease = func.sum(case((ChunkTask.lease_expires_at < now, 1), else_=0))
    for job_id, state, n, expired in session.execute(
        select(ChunkTask.job_id, ChunkTask.state, func.count(), expired_lease)
        .where(ChunkTask.job_id.in_(ids), ChunkTask.state.in_([TaskState.PENDING, TaskState.RUNNING]))
        .group_by(ChunkTask.job_id, ChunkTask.state)
    ):
        states[job_id][state] += n
        if state == TaskState.RUNNING:
            states[job_id]["expired"] += int(expired or 0)
    unsent = dict(
        session.execute(
            select(Outbox.job_id, func.count())
            .where(Outbox.job_id.in_(ids), Outbox.sent_at.is_(None))
            .group_by(Outbox.job_id)
        ).all()
    )
    for job in jobs:
        since = last_progress(job)
        age = (now - since).total_seconds() if since else 0.0
        c = states[job.job_id]
        acted = []
        if republished[job.job_id]:
            acted.append(f"republished {republished[job.job_id]} task(s)")
        if failed[job.job_id]:
            acted.append(f"failed {failed[job.job_id]} task(s) whose worker died at every attempt")
        note = (
            f"no chunk ended for {age:.0f} s: {c[TaskState.PENDING]} pending, {c[TaskState.RUNNING]} running"
            f" ({c['expired']} with an expired lease), {unsent.get(job.job_id, 0)} message(s) not yet"
            f" taken; {'; '.join(acted) if acted else 'nothing to republish (waiting for a consumer)'}"
        )
        transitions.note_stuck(session, job.job_id, note)
        log.warning("job %s is stuck: %s", job.job_id, note)


class Reconciler(Loop):
    """Every ``interval``: stuck tasks republished (or failed), and with ``stuck_after`` stuck jobs noted."""

    def __init__(
        self,
        factory: SessionFactory,
        *,
        interval: float = 30.0,
        stale_after: timedelta,
        policy: Policy | None = None,
        stuck_after: timedelta | None = None,
    ) -> None:
        super().__init__(interval)
        self.factory = factory
        self.policy = policy or Policy()
        self.stale_after = stale_after
        self.stuck_after = stuck_after

    def run_once(self) -> int:
        return reconcile_once(
            self.factory, stale_after=self.stale_after, policy=self.policy, stuck_after=self.stuck_after
        )
