"""The executor's decisions (``bridge/chunk_rules.py``) with no services: no PostgreSQL, RabbitMQ or Ray.

The outage, give-back, time-limit and shutdown rules, event by event. The executor doing what they say
against the real servers is tested in ``test_executor.py`` and ``test_reliability.py``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.broker import Settlement
from bridge.chunk_rules import (
    Abandoned,
    BodyFailed,
    Chunk,
    Count,
    DatabaseError,
    DatabaseLost,
    Decision,
    Event,
    Failure,
    GivenBack,
    Leased,
    NothingToDo,
    Ran,
    Recorded,
    Start,
    Step,
    UnexpectedEvent,
    Waiting,
    deadline,
    decide,
    due,
    renew_every,
    while_running,
)

ROOT = Path(__file__).resolve().parents[2]
GO = Start(readable=True, stopping=False)
BOOM = Failure("ValueError: bad proof")


def run(*events: Event, chunk: Chunk | None = None) -> tuple[Chunk, list[Decision]]:
    """Feed ``events`` to a delivery in turn; its state and every decision."""
    chunk = chunk or Chunk()
    decisions = []
    for event in events:
        decision = decide(chunk, event)
        chunk = decision.chunk
        decisions.append(decision)
    return chunk, decisions


def steps(decisions: list[Decision]) -> list[Step]:
    return [d.step for d in decisions]


def test_a_chunk_claimed_and_run_is_acked_and_counted_done() -> None:
    _, ds = run(GO, Leased(), Ran(done=True))
    assert steps(ds) == [Step.CLAIM, Step.RUN, Step.SETTLE]
    assert (ds[-1].settlement, ds[-1].count) == (Settlement.ACK, Count.DONE)


def test_a_repeated_delivery_is_acked_without_a_count() -> None:
    _, ds = run(GO, Leased(), Ran(done=False))  # ALREADY_DONE or STALE: the body wrote nothing
    assert (ds[-1].settlement, ds[-1].count) == (Settlement.ACK, None)
    _, ds = run(GO, NothingToDo())  # DONE, FAILED, leased elsewhere, backing off
    assert steps(ds) == [Step.CLAIM, Step.SETTLE]
    assert (ds[-1].settlement, ds[-1].count) == (Settlement.ACK, None)


def test_an_unreadable_message_is_dead_lettered() -> None:
    d = decide(Chunk(), Start(readable=False, stopping=False))
    assert (d.step, d.settlement, d.count) == (Step.SETTLE, Settlement.DEAD_LETTER, None)


def test_a_lease_abandoned_at_the_last_attempt_is_dead_lettered_and_counted_failed() -> None:
    _, ds = run(GO, Abandoned())
    assert (ds[-1].settlement, ds[-1].count) == (Settlement.DEAD_LETTER, Count.FAILED_FINAL)


def test_a_failed_body_is_recorded_then_acked_or_dead_lettered() -> None:
    chunk, ds = run(GO, Leased(), BodyFailed(BOOM))
    assert ds[-1].step == Step.RECORD_FAILURE and chunk.failure == BOOM
    retried = decide(chunk, Recorded(final=False))
    assert (retried.settlement, retried.count, retried.chunk.failure) == (Settlement.ACK, Count.FAILED, None)
    failed = decide(chunk, Recorded(final=True))
    assert (failed.settlement, failed.count) == (Settlement.DEAD_LETTER, Count.FAILED_FINAL)


def test_a_permanent_failure_is_recorded_as_permanent() -> None:
    permanent = Failure("ShareRejected: proof fails", permanent=True)
    chunk, _ = run(GO, Leased(), BodyFailed(permanent))
    assert chunk.failure is not None and chunk.failure.permanent


# -- the time limit -------------------------------------------------------------------------------
def test_a_chunk_past_its_time_limit_times_out_and_fails_its_attempt() -> None:
    ends_by = deadline(100.0, 3.0)
    assert ends_by == 103.0
    assert while_running(102.9, ends_by, released=False) == Waiting.KEEP
    assert while_running(103.0, ends_by, released=False) == Waiting.KEEP  # past it, not at it
    assert while_running(103.1, ends_by, released=False) == Waiting.TIMED_OUT
    # The executor kills it and reports a failure like any other: recorded, an attempt counted.
    _, ds = run(GO, Leased(), BodyFailed(Failure("TimeLimitExceeded: still running after 3 s")))
    assert ds[-1].step == Step.RECORD_FAILURE


@pytest.mark.parametrize("limit", [0, 0.0, None])
def test_no_time_limit_never_times_out(limit: float | None) -> None:
    assert deadline(100.0, limit) is None
    assert while_running(1e12, None, released=False) == Waiting.KEEP


# -- shutdown -------------------------------------------------------------------------------------
def test_a_delivery_that_starts_while_stopping_is_requeued() -> None:
    for chunk in (Chunk(), Chunk(give_back=True), Chunk(failure=BOOM)):
        d = decide(chunk, Start(readable=True, stopping=True))
        assert (d.step, d.settlement, d.count) == (Step.SETTLE, Settlement.REQUEUE, None)
    d = decide(Chunk(), Start(readable=False, stopping=True))
    assert d.settlement == Settlement.REQUEUE, "stopping comes first: the message is left for another bridge"


def test_a_chunk_released_by_shutdown_is_requeued_and_nothing_recorded() -> None:
    assert while_running(1.0, 2.0, released=True) == Waiting.RELEASED
    assert while_running(5.0, 2.0, released=True) == Waiting.RELEASED, "the release wins over the limit"
    for lost in (False, True):
        _, ds = run(GO, Leased(), BodyFailed(BOOM, released=True, lost_database=lost))
        assert (ds[-1].settlement, ds[-1].count) == (Settlement.REQUEUE, None)
    # A body that finished (it committed) before it noticed the release is acked as usual.
    _, ds = run(GO, Leased(), Ran(done=True))
    assert ds[-1].settlement == Settlement.ACK


# -- a database outage: hold, give back, nothing counted ------------------------------------------
def test_a_claim_that_lost_the_database_is_held_and_given_back_first() -> None:
    chunk, ds = run(GO, DatabaseLost())
    assert ds[-1].step == Step.HOLD and chunk.give_back
    assert all(d.settlement is None and d.count is None for d in ds)
    # When the database answers, the delivery starts again: the claim that may have landed is given
    # back first, so the next claim neither finds our own live lease nor counts a second attempt.
    chunk, ds = run(GO, GivenBack(), Leased(), Ran(done=True), chunk=chunk)
    assert steps(ds) == [Step.GIVE_BACK, Step.CLAIM, Step.RUN, Step.SETTLE]
    assert not chunk.give_back and ds[-1].settlement == Settlement.ACK


def test_a_body_that_lost_the_database_is_held_and_its_attempt_given_back() -> None:
    chunk, ds = run(GO, Leased(), BodyFailed(Failure("OperationalError: gone"), lost_database=True))
    assert ds[-1].step == Step.HOLD and chunk.give_back and chunk.failure is None
    assert all(d.settlement is None and d.count is None for d in ds), "the chunk's fault it is not"
    _, ds = run(GO, GivenBack(), Leased(), chunk=chunk)
    assert steps(ds) == [Step.GIVE_BACK, Step.CLAIM, Step.RUN]


def test_a_failure_whose_record_lost_the_database_is_recorded_when_it_answers() -> None:
    chunk, ds = run(GO, Leased(), BodyFailed(BOOM), DatabaseLost())
    assert ds[-1].step == Step.HOLD and chunk.failure == BOOM and not chunk.give_back
    # Again: the failure is recorded first, with no new claim (no second attempt).
    chunk, ds = run(GO, Recorded(final=False), chunk=chunk)
    assert steps(ds) == [Step.RECORD_FAILURE, Step.SETTLE]
    assert (ds[-1].settlement, ds[-1].count, chunk.failure) == (Settlement.ACK, Count.FAILED, None)


def test_an_outage_through_every_retry_keeps_holding_what_is_owed() -> None:
    chunk, _ = run(GO, DatabaseLost())
    for _ in range(3):  # the give-back itself loses the database again, and again
        chunk, ds = run(GO, DatabaseLost(), chunk=chunk)
        assert steps(ds) == [Step.GIVE_BACK, Step.HOLD] and chunk.give_back
    chunk, _ = run(GO, Leased(), BodyFailed(BOOM), DatabaseLost())
    for _ in range(3):
        chunk, ds = run(GO, DatabaseLost(), chunk=chunk)
        assert steps(ds) == [Step.RECORD_FAILURE, Step.HOLD] and chunk.failure == BOOM


@pytest.mark.parametrize("owes", [Chunk(), Chunk(give_back=True), Chunk(failure=BOOM)])
def test_another_database_error_requeues_after_a_pause(owes: Chunk) -> None:
    _, ds = run(GO, DatabaseError(), chunk=owes)
    assert (ds[-1].step, ds[-1].settlement, ds[-1].count, ds[-1].pause) == (
        Step.SETTLE,
        Settlement.REQUEUE,
        None,
        True,
    )


# -- every step, every event ----------------------------------------------------------------------
EVENTS: list[Event] = [
    GO,
    GivenBack(),
    Leased(),
    NothingToDo(),
    Abandoned(),
    Ran(done=True),
    BodyFailed(BOOM),
    BodyFailed(BOOM, lost_database=True),
    Recorded(final=True),
    DatabaseLost(),
    DatabaseError(),
]
STATES = [
    Chunk(step, give_back, failure)
    for step, give_back, failure in itertools.product([None, *Step], [False, True], [None, BOOM])
]


def test_every_decision_settles_exactly_when_it_says_so_and_a_hold_counts_nothing() -> None:
    for chunk, event in itertools.product(STATES, EVENTS):
        try:
            d = decide(chunk, event)
        except UnexpectedEvent:
            assert not isinstance(event, Start), "a delivery may always start (again)"
            continue
        assert (d.settlement is not None) == (d.step == Step.SETTLE), (chunk, event, d)
        assert d.count is None or d.step == Step.SETTLE, (chunk, event, d)
        if d.step == Step.HOLD:
            assert isinstance(event, DatabaseLost | BodyFailed), (chunk, event, d)


def test_an_event_a_step_cannot_produce_is_refused() -> None:
    with pytest.raises(UnexpectedEvent):
        decide(Chunk(step=Step.CLAIM), Ran(done=True))
    with pytest.raises(UnexpectedEvent):
        decide(Chunk(step=Step.SETTLE), Leased())


# -- timing ---------------------------------------------------------------------------------------
def test_leases_are_renewed_three_times_a_lease_at_most_once_a_second() -> None:
    assert renew_every(600) == 200
    assert renew_every(1) == 1.0
    assert not due(10.0, 0.0, 200) and due(200.0, 0.0, 200) and due(250.0, 0.0, 200)


def test_the_rules_import_no_ray_and_no_database() -> None:
    code = "import sys, bridge.chunk_rules; print(sorted(m for m in sys.modules if m.split('.')[0] in "
    code += "{'ray', 'sqlalchemy', 'psycopg', 'pika', 'service'}))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
