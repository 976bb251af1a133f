"""The single-machine runner for the embedded default: SQLite (or any database), no RabbitMQ, local Ray.

The same path as production from the outbox on: the runner takes due outbox rows straight from the
table (instead of a relay publishing them and a queue delivering them), then claims, runs the body as
a Ray task, and records failures with the very same ``transitions`` functions, so retries, backoff,
FAILED chunks, re-drive and the exactly-once completion behave as they do behind RabbitMQ. What is
missing is only the broker: there is no dead-letter queue (a FAILED chunk is visible in its job).

One runner per database: SQLite has one writer and no ``SKIP LOCKED``. Ray workers write their
results to the same file (WAL mode, a busy timeout), which SQLite serialises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

import ray
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge import metrics
from bridge.consumer import default_worker_id, describe_error
from bridge.db import in_transaction, session_factory
from bridge.reconciler import reconcile_once, sweep_escrows
from bridge.tasks import DEFAULT_BODIES, run_chunk
from service.db.models import Outbox
from service.jobs import transitions
from service.jobs.transitions import Claim, Outcome, Policy, utcnow
from service.settings import Settings

log = logging.getLogger(__name__)


class EmbeddedRunner:
    def __init__(
        self,
        settings: Settings,
        *,
        bodies: Mapping[str, str] | None = None,
        worker_id: str | None = None,
        policy: Policy | None = None,
        max_retries: int = 0,  # see Bridge: retries are counted in PostgreSQL
        poll_interval: float = 0.2,
        reconcile_every: float = 30.0,
    ) -> None:
        self.database_url = settings.sqlalchemy_url
        self.factory = session_factory(self.database_url)
        self.policy = policy or Policy.from_settings(settings)
        self.max_in_flight = settings.max_in_flight
        self.task_memory = settings.task_memory_mb * 1024 * 1024
        self.bodies = {**DEFAULT_BODIES, **(bodies or {})}
        self.worker_id = worker_id or default_worker_id()
        self.max_retries = max_retries
        self.poll_interval = poll_interval
        self.reconcile_every = reconcile_every
        self.escrow_retention = timedelta(hours=settings.escrow_retention_hours)
        self._stop = threading.Event()
        self._inflight: dict[Any, Claim] = {}  # ObjectRef -> claim
        self._last_reconcile = 0.0
        self._last_renew = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        """Run until :meth:`stop` (a server's background thread)."""
        self._loop(lambda: self._stop.is_set())

    def run_until_idle(self, timeout: float | None = None) -> None:
        """Run until no message is due or waiting and nothing is in flight (the CLI's demo).

        Messages waiting for a retry backoff count as work: the runner waits for them.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def done() -> bool:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("embedded runner did not become idle in time")
            return self._stop.is_set() or (not self._inflight and self._unsent() == 0)

        self._loop(done)

    def _loop(self, finished: Callable[[], bool]) -> None:
        while not finished():
            started = self._start_due()
            collected = self._collect(timeout=0 if started else self.poll_interval)
            if not started and not collected and not self._inflight:
                self._maybe_reconcile()
                time.sleep(self.poll_interval)
        self._drain_inflight()

    # -- steps --------------------------------------------------------------------------------
    def _unsent(self) -> int:
        return in_transaction(
            self.factory,
            lambda s: s.scalar(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))) or 0,
        )

    def _take_due(self, session: Session, limit: int) -> list[dict[str, Any]]:
        rows = list(
            session.scalars(
                select(Outbox)
                .where(Outbox.sent_at.is_(None), Outbox.available_at <= utcnow())
                .order_by(Outbox.available_at, Outbox.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        now = utcnow()
        for row in rows:
            row.sent_at = now  # "delivered": to this runner, in place of a queue
        return [dict(row.body) for row in rows]

    def _start_due(self) -> int:
        room = self.max_in_flight - len(self._inflight)
        if room <= 0:
            return 0
        started = 0
        for body in in_transaction(self.factory, lambda s: self._take_due(s, room)):
            task_id = int(body["task_id"])
            claim = in_transaction(
                self.factory, lambda s, t=task_id: transitions.claim(s, t, self.worker_id, self.policy)
            )
            if claim is None:
                continue
            ref = run_chunk.options(
                name=f"chunk:{claim.operation}:{claim.task_id}",
                memory=self.task_memory,
                max_retries=self.max_retries,
                retry_exceptions=False,
            ).remote(self.bodies[claim.operation], self.database_url, claim)
            self._inflight[ref] = claim
            started += 1
        return started

    def _collect(self, timeout: float) -> int:
        if not self._inflight:
            return 0
        ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=timeout)
        for ref in ready:
            claim = self._inflight.pop(ref)
            self._finish(claim, ref)
        if self._inflight and time.monotonic() - self._last_renew > self.policy.lease_seconds / 3:
            self._last_renew = time.monotonic()
            self._renew(self._inflight.values())
        return len(ready)

    def _finish(self, claim: Claim, ref: Any) -> None:
        try:
            outcome = Outcome(ray.get(ref))
        except Exception as exc:
            error = describe_error(exc)
            log.warning("task %s attempt %s failed: %s", claim.task_id, claim.attempt, error)
            outcome = in_transaction(
                self.factory,
                lambda s: transitions.fail(s, claim.task_id, self.worker_id, error, self.policy),
            )
            metrics.chunk_failed(claim.operation, final=outcome == Outcome.FAILED)
            return
        if outcome == Outcome.DONE:
            metrics.chunk_done(claim.operation)

    def _renew(self, claims: Iterable[Claim]) -> None:
        ids = [c.task_id for c in claims]
        in_transaction(self.factory, lambda s: transitions.renew_leases(s, ids, self.worker_id, self.policy))

    def _maybe_reconcile(self) -> None:
        if time.monotonic() - self._last_reconcile < self.reconcile_every:
            return
        self._last_reconcile = time.monotonic()
        reconcile_once(self.factory, stale_after=timedelta(seconds=2 * self.policy.lease_seconds))
        sweep_escrows(self.factory, retention=self.escrow_retention)

    def _drain_inflight(self) -> None:
        """Stopping: wait for what runs (results are committed by the tasks themselves)."""
        while self._inflight:
            self._collect(timeout=1.0)
