"""A delivery's database steps: give an attempt back, claim its task, record its failure.

Its one job: do each step ``chunk_rules`` names that is a transaction of ``service.jobs.transitions``
(``release``, ``claim``, ``fail``) and report what it found as a ``chunk_rules`` event, the database's own
failure included: ``DatabaseLost`` when the connection went (the delivery is held), ``DatabaseError``
otherwise (nothing was recorded: it is requeued).

Threads: a delivery's worker thread; each call is one transaction of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from bridge import chunk_rules as rules
from service.db.session import SessionFactory, in_transaction, is_disconnect
from service.jobs import transitions
from service.jobs.transitions import Claim, Claimed, ClaimResult, Outcome, Policy

log = logging.getLogger("bridge.executor")  # the executor's events keep one logger name
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChunkDb:
    factory: SessionFactory
    worker_id: str
    policy: Policy

    def give_back(self, task_id: int) -> rules.Event:
        release = partial(transitions.release, task_id=task_id, worker=self.worker_id)
        return self._step(f"giving back task {task_id}", release, lambda _: rules.GivenBack())

    def claim(self, task_id: int, leased: Callable[[Claim], None]) -> rules.Event:
        """Claim the task; ``leased`` gets the claim when it leased the task to us."""

        def found(result: ClaimResult) -> rules.Event:
            if result.lease is not None:
                leased(result.lease)
                return rules.Leased()
            if result.status == Claimed.ABANDONED:
                log.warning("task %s FAILED: its worker died at every attempt", task_id)
                return rules.Abandoned()
            return rules.NothingToDo()  # done, failed, leased elsewhere or backing off: nothing for us

        claim = partial(transitions.claim, task_id=task_id, worker=self.worker_id, policy=self.policy)
        return self._step(f"claim of task {task_id}", claim, found)

    def record_failure(self, claim: Claim, failure: rules.Failure) -> rules.Event:
        def recorded(outcome: Outcome) -> rules.Event:
            if outcome == Outcome.FAILED:
                log.warning(
                    "task %s of job %s FAILED after %s attempt(s)", claim.task_id, claim.job_id, claim.attempt
                )
            elif outcome == Outcome.RETRY:
                log.info("task %s of job %s will be retried", claim.task_id, claim.job_id)
            return rules.Recorded(final=outcome == Outcome.FAILED)

        fail = partial(
            transitions.fail,
            task_id=claim.task_id,
            worker=self.worker_id,
            error=failure.error,
            policy=self.policy,
            permanent=failure.permanent,
        )
        return self._step(f"recording the failure of task {claim.task_id}", fail, recorded)

    def _step(self, what: str, fn: Callable[[Any], T], then: Callable[[T], rules.Event]) -> rules.Event:
        """A step's transaction, and what it found: ``then`` of its result, or the database's failure."""
        try:
            result = in_transaction(self.factory, fn)
        except Exception as exc:
            if is_disconnect(exc):
                log.warning("%s lost the database; held", what)
                return rules.DatabaseLost()
            log.warning("%s failed (%s); requeueing", what, type(exc).__name__)
            return rules.DatabaseError()
        return then(result)
