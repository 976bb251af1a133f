"""One claimed chunk on Ray: submit ``run_chunk``, wait for it within its time limit, say what happened.

Its one job: turn a claim into the ``bridge/chunk_rules.py`` event the executor reports (``Ran`` or
``BodyFailed``), with the error a job's status may show (:func:`describe_error`).

The task is submitted with the memory bound (``task_memory_mb``) and Ray's own retries off
(``max_retries=0``, ``retry_exceptions=False``): every retry is counted in PostgreSQL. A worker's death
(kill, node loss) or an exception surfaces from ``ray.get`` and becomes a failed attempt. Ray's OOM killer
retries a killed task forever unless ``max_retries`` is 0 (``docs/field-notes.md#ray``): with 0, a chunk
too big for its node ends FAILED with "OutOfMemoryError" instead of looping. The database URL travels
without its password (``without_password``).

The wait is ``ray.wait`` a second at a time, so that shutdown's release or the time limit
(``chunk_time_limit_seconds``, ``chunk_rules.while_running``) can end it; past the limit the task's worker
is killed (its transaction, if any, rolls back) and the attempt fails with :class:`TimeLimitExceeded`, so a
hung call costs an attempt instead of holding its job, and a CPU, for ever.

Threads: :meth:`ChunkRun.run` runs on the delivery's worker thread; shutdown, on the main thread, marks a
:class:`Running` released and cancels or kills its task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray

from bridge import chunk_rules as rules
from bridge.error_text import cause, describe_error
from bridge.tasks import run_chunk
from service.db.session import is_disconnect, without_password
from service.jobs import transitions
from service.jobs.transitions import Claim, Outcome

# The executor's events keep the one logger name operators filter on, whichever of its modules logs them.
log = logging.getLogger("bridge.executor")


def is_permanent(exc: BaseException) -> bool:
    """A body's failure no retry can change (``transitions.PermanentFailure``): FAILED at once."""
    return isinstance(cause(exc), transitions.PermanentFailure)


def is_infrastructure(exc: BaseException) -> bool:
    """A body that failed because the database went away (not because of its chunk)."""
    return is_disconnect(cause(exc))


class TimeLimitExceeded(Exception):
    """The chunk ran past ``chunk_time_limit_seconds``: its worker was killed, the attempt fails."""


class _Released(Exception):
    """Shutdown released this work while its task ran: the message is requeued, nothing recorded."""


@dataclass(slots=True, eq=False)
class Running:
    """One delivery's Ray task: its worker thread submits it and waits; shutdown releases it."""

    ref: Any = None  # the task, once submitted
    released: bool = False  # shutdown released its lease: stop waiting, record nothing (main thread sets)

    def cancel(self) -> None:
        """Ask Ray to stop the task (shutdown, once its lease is released)."""
        if self.ref is not None:
            ray.cancel(self.ref, force=False)

    def kill_if_running(self) -> None:
        """A released task that did not stop when asked (blocked in a call) must not keep a CPU of the
        cluster for ever: its worker process is killed (its transaction, if any, rolls back)."""
        if self.ref is not None and not ray.wait([self.ref], timeout=0)[0]:
            ray.cancel(self.ref, force=True)


@dataclass(frozen=True, slots=True)
class ChunkRun:
    bodies: Mapping[str, str]  # the body's module path by operation, or "<operation>:<variant>"
    database_url: str  # the Ray task's; sent without its password
    task_memory: int  # bytes: Ray schedules the task only where this much is free
    time_limit: float  # seconds; 0: none
    max_retries: int = 0  # Ray's; every retry is counted in PostgreSQL instead

    def run(self, claim: Claim, running: Running) -> rules.Event:
        """Run the claimed chunk to its end: ``Ran``, or ``BodyFailed`` with what failed."""
        body_path = self.bodies.get(claim.body_key) or self.bodies[claim.operation]
        try:
            running.ref = run_chunk.options(
                name=f"chunk:{claim.operation}:{claim.task_id}",
                memory=self.task_memory,
                max_retries=self.max_retries,
                retry_exceptions=False,
            ).remote(body_path, without_password(self.database_url), claim)
            outcome = Outcome(self._result(running))
        except Exception as exc:
            failure = rules.Failure(describe_error(exc), permanent=is_permanent(exc))
            if running.released:
                return rules.BodyFailed(failure, released=True)
            if is_infrastructure(exc):
                log.warning("task %s lost the database (%s); held", claim.task_id, failure.error)
                return rules.BodyFailed(failure, lost_database=True)
            log.warning("task %s attempt %s failed: %s", claim.task_id, claim.attempt, failure.error)
            return rules.BodyFailed(failure)
        if outcome == Outcome.DONE:
            log.info("%s task %s of job %s done", claim.operation, claim.task_id, claim.job_id)
        return rules.Ran(done=outcome == Outcome.DONE)

    def _result(self, running: Running) -> Any:
        """The task's result. One still running when shutdown released it is left to Ray's cancel; one
        past its time limit is killed and fails its attempt."""
        ends_by = rules.deadline(time.monotonic(), self.time_limit)
        while True:
            ready, _ = ray.wait([running.ref], timeout=1.0)
            if ready:
                return ray.get(running.ref)
            match rules.while_running(time.monotonic(), ends_by, running.released):
                case rules.Waiting.RELEASED:
                    raise _Released
                case rules.Waiting.TIMED_OUT:
                    ray.cancel(running.ref, force=True)
                    raise TimeLimitExceeded(
                        f"still running after its time limit of {self.time_limit:g} s; its worker was killed"
                    )
