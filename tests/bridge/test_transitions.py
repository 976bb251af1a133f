"""The chunk-task lifecycle against the real PostgreSQL: exactly-once effects under repetition and races."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bridge.reconciler import reconcile_once
from service.db.models import ChunkTask, Outbox
from service.jobs import clock, transitions
from service.jobs.transitions import NOTHING_TO_DO, Claimed, Outcome, Policy
from tests.bridge.fakes import fake_finalize
from tests.bridge.helpers_bridge import election_row, job_row, make_tally_job, tasks_of

pytestmark = pytest.mark.services
POLICY = Policy(max_attempts=2, backoff_seconds=0.0, lease_seconds=60)


def _write_count(election_id: int):  # type: ignore[no-untyped-def]
    from tests.bridge.fakes import _add

    def write(session, task, job):  # type: ignore[no-untyped-def]
        _add(session, election_id, ballots=1, chunks=1)

    return write


def _outbox_for(factory, task_id: int) -> list[Outbox]:  # type: ignore[no-untyped-def]
    with factory() as s:
        return list(s.scalars(select(Outbox).where(Outbox.task_id == task_id).order_by(Outbox.id)))


def test_claim_leases_and_counts_attempts(factory, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=10, chunk_size=5)
    task = tasks_of(factory, job_id)[0]
    with factory.begin() as s:
        c = transitions.claim(s, task.id, "w1", POLICY).lease
    assert c is not None and c.attempt == 1 and c.operation == "TALLY"
    job = job_row(factory, job_id)
    assert job.status == "IN_PROGRESS" and job.started_at is not None
    with factory.begin() as s:
        assert transitions.claim(s, task.id, "w2", POLICY) == NOTHING_TO_DO  # someone else's live lease
    with factory.begin() as s:
        s.execute(
            update(ChunkTask)
            .where(ChunkTask.id == task.id)
            .values(lease_expires_at=clock.utcnow() - timedelta(seconds=1))
        )
    with factory.begin() as s:
        c2 = transitions.claim(s, task.id, "w2", POLICY).lease  # the lease ran out: w2 may take it
    assert c2 is not None and c2.attempt == 2
    with factory.begin() as s:
        assert transitions.fail(s, task.id, "w1", "late failure", POLICY) == Outcome.STALE
    with factory.begin() as s:
        assert transitions.release(s, task.id, "w2")
    t = tasks_of(factory, job_id)[0]
    assert (t.state, t.attempts, t.lease_owner) == ("PENDING", 1, None)


def test_repeated_complete_counts_once(factory, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=10, chunk_size=5)
    tasks = tasks_of(factory, job_id)
    write = _write_count(election_id)
    outcomes = []
    for task in tasks + tasks + tasks:  # every message delivered three times
        with factory.begin() as s:
            transitions.claim(s, task.id, "w", POLICY)
        with factory.begin() as s:
            outcomes.append(transitions.complete(s, task.id, write, fake_finalize))
    assert outcomes.count(Outcome.DONE) == 2 and outcomes.count(Outcome.ALREADY_DONE) == 4
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("COMPLETED", 2, 0)
    assert job.completed_at is not None
    assert election_row(factory, election_id).result == {"ballots": 2, "chunks": 2, "finalized": 1}


def test_concurrent_deliveries_exactly_once(factory, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=60, chunk_size=1)
    ids = [t.id for t in tasks_of(factory, job_id)] * 3
    random.Random(7).shuffle(ids)
    write = _write_count(election_id)
    lock = threading.Lock()

    def worker(n: int) -> None:
        while True:
            with lock:
                if not ids:
                    return
                task_id = ids.pop()
            with factory.begin() as s:
                transitions.claim(s, task_id, f"w{n}", POLICY)
            with factory.begin() as s:
                transitions.complete(s, task_id, write, fake_finalize)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks) == ("COMPLETED", 60)
    assert election_row(factory, election_id).result == {"ballots": 60, "chunks": 60, "finalized": 1}


def test_fail_retries_then_fails_the_job_and_redrive(factory, clean) -> None:  # type: ignore[no-untyped-def]
    election_id, job_id = make_tally_job(factory, ballots=3, chunk_size=1)
    bad, *good = tasks_of(factory, job_id)
    policy = Policy(max_attempts=2, backoff_seconds=30, lease_seconds=60)
    write = _write_count(election_id)
    with factory.begin() as s:
        transitions.claim(s, bad.id, "w", policy)
    with factory.begin() as s:
        assert transitions.fail(s, bad.id, "w", "ValueError: bad proof", policy) == Outcome.RETRY
    t = tasks_of(factory, job_id)[0]
    assert t.state == "PENDING" and t.last_error == "ValueError: bad proof"
    retry = _outbox_for(factory, bad.id)[-1]
    assert retry.sent_at is None and retry.available_at == t.not_before
    assert (t.not_before - clock.utcnow()).total_seconds() > 25
    with factory.begin() as s:  # an early duplicate of the message respects the backoff
        assert transitions.claim(s, bad.id, "w", policy) == NOTHING_TO_DO
    with factory.begin() as s:
        s.execute(update(ChunkTask).where(ChunkTask.id == bad.id).values(not_before=None))
    with factory.begin() as s:
        assert transitions.claim(s, bad.id, "w", policy).status == Claimed.LEASED
    with factory.begin() as s:
        assert transitions.fail(s, bad.id, "w", "ValueError: bad proof", policy) == Outcome.FAILED
    job = job_row(factory, job_id)
    assert (job.status, job.failed_chunks) == ("IN_PROGRESS", 1)  # others still pending
    for task in good:
        with factory.begin() as s:
            transitions.claim(s, task.id, "w", policy)
            transitions.complete(s, task.id, write, fake_finalize)
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("FAILED", 2, 1)
    assert job.error_message == "1 chunk(s) failed: chunk 1: ValueError: bad proof"

    with factory.begin() as s:
        assert transitions.redrive_failed(s, job_id) == 1
    job = job_row(factory, job_id)
    assert (job.status, job.failed_chunks, job.error_message) == ("IN_PROGRESS", 0, None)
    t = tasks_of(factory, job_id)[0]
    assert (t.state, t.attempts) == ("PENDING", 0)
    assert _outbox_for(factory, bad.id)[-1].sent_at is None
    with factory.begin() as s:
        transitions.claim(s, bad.id, "w", policy)
        assert transitions.complete(s, bad.id, write, fake_finalize) == Outcome.DONE
    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks, job.failed_chunks) == ("COMPLETED", 3, 0)
    assert election_row(factory, election_id).result == {"ballots": 3, "chunks": 3, "finalized": 1}


def test_reconciler_republishes_only_stuck_tasks(factory, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=4, chunk_size=1)
    t1, t2, t3, t4 = tasks_of(factory, job_id)
    stale = timedelta(seconds=60)
    assert reconcile_once(factory, stale_after=stale) == 0  # all have unsent outbox rows
    long_ago = clock.utcnow() - timedelta(hours=1)
    with factory.begin() as s:
        s.execute(update(Outbox).values(sent_at=long_ago, created_at=long_ago))
        transitions.claim(s, t2.id, "dead", POLICY)
        transitions.claim(s, t3.id, "alive", POLICY)
        transitions.claim(s, t4.id, "w", POLICY)
        transitions.complete(s, t4.id, lambda *a: None, fake_finalize)
        s.execute(update(ChunkTask).where(ChunkTask.id == t2.id).values(lease_expires_at=long_ago))
    # t1 PENDING with no live message, t2 RUNNING with a lapsed lease: republished; t3 leased, t4 DONE: not.
    assert reconcile_once(factory, stale_after=stale) == 2
    with factory() as s:
        fresh = [o.task_id for o in s.scalars(select(Outbox).where(Outbox.sent_at.is_(None)))]
        assert sorted(fresh) == sorted([t1.id, t2.id])
        assert s.scalar(select(func.count()).select_from(Outbox)) == 6
    assert reconcile_once(factory, stale_after=stale) == 0  # their new rows are pending now
