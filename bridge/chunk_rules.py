"""The executor's decisions, without Ray or a database: what to do next with one delivery, and when.

A delivery goes through a few steps (give an attempt back, claim its task, run it, record its failure);
the result of each is an event, and :func:`decide` names the next step, or *hold* (the database is away:
keep the delivery unsettled until it answers, then start again), or *settle* (ack, requeue or
dead-letter), with the metric to count. :class:`Chunk` is all a delivery carries between its steps, so a
held one knows what it owes first when it starts again: to give back an attempt its claim or its body
may have taken (the attempt is not the chunk's fault), or to record a failure whose recording lost the
database. Nothing is settled or counted while the database is away: an outage costs no attempt and
dead-letters nothing.

What a delivery's fate is:

- claimed and the body succeeds (or the task was already DONE, or someone else holds a live lease, or it
  is backing off, or its job ended): ACK;
- the body raises or its worker dies, or it runs past ``chunk_time_limit_seconds`` (its worker is then
  killed): the failure is recorded (``transitions.fail``); below the limit that writes a delayed outbox
  message and the delivery is ACKed; at the limit the task is FAILED and the delivery DEAD_LETTERed;
- unreadable: DEAD_LETTER;
- its lease was taken over at the last attempt (its worker died every time): the task is FAILED,
  DEAD_LETTER;
- the executor is stopping, or shutdown released the task under its body, or the database failed for
  another reason than an outage (nothing recorded): REQUEUE.

Beside it, the rules of time: :func:`while_running` (a running chunk released by shutdown, or past its
time limit) and :func:`due` (lease renewal, the database probe during an outage).

``bridge/executor.py`` does what these say; ``tests/bridge/test_executor_rules.py`` tests them with no
services. Pure: no Ray, no SQLAlchemy (that test checks it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from bridge.broker import Settlement


class Step(enum.Enum):
    GIVE_BACK = "give back"  # transitions.release: the attempt the task holds is not the chunk's
    CLAIM = "claim"  # transitions.claim
    RUN = "run"  # the claimed chunk's Ray task, then wait for it
    RECORD_FAILURE = "record failure"  # transitions.fail
    HOLD = "hold"  # the database is away: keep the delivery unsettled, start again when it answers
    SETTLE = "settle"  # with Decision.settlement: the delivery's end here


class Count(enum.Enum):
    """The metric a decision counts (``bridge.metrics``)."""

    DONE = "done"  # this run moved the task to DONE
    FAILED = "failed"  # a failed attempt recorded, the task not FAILED (retried, or no longer ours)
    FAILED_FINAL = "failed final"  # the task is FAILED


@dataclass(frozen=True, slots=True)
class Failure:
    error: str  # ``describe_error``'s text: type and first line, no traceback
    permanent: bool = False  # ``transitions.PermanentFailure``: FAILED at once


@dataclass(frozen=True, slots=True)
class Chunk:
    """One delivery's state: the step it is in, and what it owes first if it is held and starts again."""

    step: Step | None = None  # None: not started
    give_back: bool = False  # release the task before claiming it again
    failure: Failure | None = None  # record this failure before anything else


@dataclass(frozen=True, slots=True)
class Decision:
    chunk: Chunk  # the state after the event; ``chunk.step`` is what to do now
    settlement: Settlement | None = None  # exactly when the step is SETTLE
    count: Count | None = None
    pause: bool = False  # an unexpected error: wait a moment before settling, not to spin on it

    @property
    def step(self) -> Step:
        assert self.chunk.step is not None  # every decision names a step
        return self.chunk.step


# -- events: what the last step found ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Start:
    """The delivery starts on a worker thread, or starts again after a hold."""

    readable: bool  # the message named a task
    stopping: bool  # the executor is shutting down


@dataclass(frozen=True, slots=True)
class GivenBack:
    """The release committed (or found nothing of ours to release)."""


@dataclass(frozen=True, slots=True)
class Leased:
    """The claim leased the task to us and counted the attempt."""


@dataclass(frozen=True, slots=True)
class NothingToDo:
    """The claim found the task DONE or FAILED, leased elsewhere, backing off, or its job ended."""


@dataclass(frozen=True, slots=True)
class Abandoned:
    """The claim took over a lease that ran out at the last attempt: the task is FAILED now."""


@dataclass(frozen=True, slots=True)
class Ran:
    """The Ray task returned: it committed its result and the task's state itself."""

    done: bool  # this run moved the task to DONE (not ALREADY_DONE, not STALE)


@dataclass(frozen=True, slots=True)
class BodyFailed:
    """The Ray task raised, its worker died, or it ran past its time limit and was killed."""

    failure: Failure
    released: bool = False  # shutdown released the task while it ran (the attempt is given back already)
    lost_database: bool = False  # the body lost the database: not the chunk's fault


@dataclass(frozen=True, slots=True)
class Recorded:
    """``transitions.fail`` committed."""

    final: bool  # the task is FAILED now


@dataclass(frozen=True, slots=True)
class DatabaseLost:
    """The step's transaction lost the database (its commit may or may not have landed)."""


@dataclass(frozen=True, slots=True)
class DatabaseError:
    """The step's transaction failed for another reason: nothing was recorded."""


Event = (
    Start
    | GivenBack
    | Leased
    | NothingToDo
    | Abandoned
    | Ran
    | BodyFailed
    | Recorded
    | DatabaseLost
    | DatabaseError
)


class UnexpectedEvent(ValueError):
    """An event the current step cannot produce (a bug in the executor, not in a chunk)."""


def _go(chunk: Chunk, step: Step) -> Decision:
    return Decision(replace(chunk, step=step))


def _settle(chunk: Chunk, how: Settlement, count: Count | None = None, *, pause: bool = False) -> Decision:
    return Decision(replace(chunk, step=Step.SETTLE), settlement=how, count=count, pause=pause)


def decide(chunk: Chunk, event: Event) -> Decision:
    """The next step of a delivery in state ``chunk`` after ``event``."""
    match chunk.step, event:
        case _, Start(readable=readable, stopping=stopping):
            if stopping:
                return _settle(chunk, Settlement.REQUEUE)  # for another bridge, or this one restarted
            if not readable:
                return _settle(chunk, Settlement.DEAD_LETTER)
            if chunk.failure is not None:
                return _go(chunk, Step.RECORD_FAILURE)
            return _go(chunk, Step.GIVE_BACK if chunk.give_back else Step.CLAIM)

        case Step.GIVE_BACK, GivenBack():
            return Decision(replace(chunk, step=Step.CLAIM, give_back=False))

        case Step.CLAIM, Leased():
            return _go(chunk, Step.RUN)
        case Step.CLAIM, NothingToDo():
            return _settle(chunk, Settlement.ACK)
        case Step.CLAIM, Abandoned():
            return _settle(chunk, Settlement.DEAD_LETTER, Count.FAILED_FINAL)
        case Step.CLAIM, DatabaseLost():
            # The claim's commit may have landed before the connection went (its answer did not): give
            # it back first when the delivery runs again, or the claim would find our own lease and drop
            # the work, or find it expired and count a second attempt.
            return Decision(replace(chunk, step=Step.HOLD, give_back=True))

        case Step.RUN, Ran(done=done):
            return _settle(chunk, Settlement.ACK, Count.DONE if done else None)
        case Step.RUN, BodyFailed(failure=failure, released=released, lost_database=lost):
            if released:
                return _settle(chunk, Settlement.REQUEUE)  # shutdown released it: nothing counted
            if lost:
                return Decision(replace(chunk, step=Step.HOLD, give_back=True))
            return Decision(replace(chunk, step=Step.RECORD_FAILURE, failure=failure))

        case Step.RECORD_FAILURE, Recorded(final=final):
            how = Settlement.DEAD_LETTER if final else Settlement.ACK
            return Decision(
                replace(chunk, step=Step.SETTLE, failure=None),
                settlement=how,
                count=Count.FAILED_FINAL if final else Count.FAILED,
            )

        case ((Step.GIVE_BACK | Step.RECORD_FAILURE), DatabaseLost()):
            return _go(chunk, Step.HOLD)  # what it owes stays owed
        case ((Step.GIVE_BACK | Step.CLAIM | Step.RECORD_FAILURE), DatabaseError()):
            # Nothing recorded: requeue; the next claim counts a new attempt, the lease guards overlap.
            return _settle(chunk, Settlement.REQUEUE, pause=True)

    raise UnexpectedEvent(f"{type(event).__name__} in step {chunk.step}")


class Waiting(enum.Enum):
    KEEP = "keep waiting"
    RELEASED = "released"  # shutdown released the task: stop waiting, Ray's cancel has it
    TIMED_OUT = "timed out"  # past the time limit: kill its worker, the attempt fails


def deadline(started: float, limit: float | None) -> float | None:
    """When a chunk started at ``started`` must have ended; None: no limit (``limit`` 0 or None)."""
    return started + limit if limit else None


def while_running(now: float, ends_by: float | None, released: bool) -> Waiting:
    """A chunk still running: shutdown's release ends the wait first, then the time limit."""
    if released:
        return Waiting.RELEASED
    if ends_by is not None and now > ends_by:
        return Waiting.TIMED_OUT
    return Waiting.KEEP


def due(now: float, last: float, every: float) -> bool:
    """Whether something done at ``last`` is due again (monotonic seconds)."""
    return now - last >= every


def renew_every(lease_seconds: float) -> float:
    """Leases are renewed three times a lease, at most once a second."""
    return max(lease_seconds / 3, 1.0)
