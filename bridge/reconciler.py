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

With ``stuck_after``, each round records on every stuck job (no chunk ended for that long,
``service.jobs.status.is_stuck``) what it found and did: its tasks by state, its unsent messages, how
many it republished (``reconciler_note``, shown in the job's status).

Between rounds, every ``callback_interval``, it delivers due completion callbacks
(``service.jobs.callbacks``): one POST per notification, signed, outside any transaction, never from a
chunk worker, retried with backoff from the table.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.db.models import ChunkTask, ElectionJob, Outbox, TaskState
from service.db.session import SessionFactory, in_transaction
from service.errors import Invalid
from service.jobs import callbacks, transitions
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


@dataclass(frozen=True)
class CallbackConfig:
    """How the reconciler delivers completion callbacks (``Settings`` fields of the same names)."""

    secret: bytes
    allowed_urls: list[str]
    max_attempts: int = 8
    backoff_seconds: float = 5.0
    timeout_seconds: float = 5.0


def _recorder(
    delivery_id: int, error: str | None, max_attempts: int, backoff_seconds: float
) -> Callable[[Session], str | None]:
    return lambda s: callbacks.record(
        s, delivery_id, error, max_attempts=max_attempts, backoff_seconds=backoff_seconds
    )


def _attempt(http: Any, config: CallbackConfig, d: callbacks.Delivery) -> tuple[str | None, int]:
    """One POST of one notification: (None, _) when accepted, else (the error, the attempt limit it
    counts against; 0 fails the row now: a URL that is refused will always be)."""
    from bridge.executor import describe_error

    try:
        url = callbacks.normalise(d.url)  # a row stored before URLs were normalised at creation
    except Invalid as exc:
        return f"the callback URL is refused: {exc.reason}", 0
    if not callbacks.allowed(url, config.allowed_urls):
        return f"the callback URL ({url}) is outside the allow-list", 0
    try:
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            callbacks.TIMESTAMP_HEADER: stamp,
            callbacks.SIGNATURE_HEADER: callbacks.sign(config.secret, stamp, d.body),
            callbacks.DELIVERY_HEADER: str(d.id),
        }
        response = http.post(url, content=d.body, headers=headers)
    except Exception as exc:
        # Whatever goes wrong with one request (httpx.InvalidURL, a transport or client bug) is this
        # row's alone: it must still move toward FAILED, and the rest of the round must still be sent.
        return describe_error(exc), config.max_attempts
    if 200 <= response.status_code < 300:
        return None, config.max_attempts
    return f"HTTP {response.status_code}", config.max_attempts


def deliver_callbacks(factory: SessionFactory, config: CallbackConfig, client: Any = None) -> int:
    """One attempt at each due notification; returns how many were delivered (2xx). An error of one
    delivery is recorded on its row and the round goes on."""
    import httpx

    deliveries = in_transaction(factory, callbacks.take_due)
    if not deliveries:
        return 0
    own = client is None
    http = client or httpx.Client(timeout=config.timeout_seconds, follow_redirects=False)
    delivered = 0
    try:
        for d in deliveries:
            error, attempts = _attempt(http, config, d)
            state = in_transaction(factory, _recorder(d.id, error, attempts, config.backoff_seconds))
            if error is None:
                delivered += 1
            else:
                log.warning("callback of job %s, attempt %d: %s (now %s)", d.job_id, d.attempt, error, state)
    finally:
        if own:
            http.close()
    return delivered


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
        stuck_after: timedelta | None = None,
        callbacks: CallbackConfig | None = None,
        callback_interval: float = 1.0,
    ) -> None:
        self.factory = factory
        self.policy = policy or Policy()
        self.interval = interval
        self.stale_after = stale_after
        self.escrow_retention = escrow_retention
        self.stuck_after = stuck_after
        self.callbacks = callbacks
        self.callback_interval = callback_interval
        self._stop = threading.Event()

    def run(self) -> None:
        tick = min(self.interval, self.callback_interval) if self.callbacks else self.interval
        # A round every so many ticks, counted rather than timed: a wait that returns a hair early must
        # not push a round back by a whole interval.
        every = max(1, round(self.interval / tick))
        ticks = 0
        while not self._stop.wait(tick):
            ticks += 1
            if ticks % every == 0:
                try:
                    reconcile_once(
                        self.factory,
                        stale_after=self.stale_after,
                        policy=self.policy,
                        stuck_after=self.stuck_after,
                    )
                    sweep_escrows(self.factory, retention=self.escrow_retention)
                except Exception as exc:
                    log.warning("reconcile round failed (%s)", type(exc).__name__)
            if self.callbacks is not None:
                try:
                    deliver_callbacks(self.factory, self.callbacks)
                except Exception as exc:
                    log.warning("callback round failed (%s)", type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
