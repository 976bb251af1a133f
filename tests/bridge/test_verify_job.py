"""VERIFY jobs end to end: a decrypted election (real ElectionGuard arithmetic: 3 guardians, quorum 2, one
missing and compensated for; cast and spoiled ballots in chunks of 4) verified from the database through
the relay, RabbitMQ (``verify.queue``), the bridge and Ray; then the same election doctored in the
database, once by a cloned ballot and once by a changed selection of its encrypted tally: each a
COMPLETED job whose verdict is ``verified: false`` with the problem named.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from bridge.brokers.rabbitmq import RabbitMQBroker
from bridge.executor import Executor
from service.db.models import Ballot, Election, VerifyReport
from service.db.session import SessionFactory
from service.elections import results
from service.jobs import planning, status
from service.settings import Settings
from tests.bridge.helpers_bridge import (
    bridge_settings,
    closed_election_with_tally,
    job_row,
    start_decryptions,
    wait_completed,
    wait_for,
)
from tests.bridge.test_bridge_flow import pipeline

pytestmark = pytest.mark.services
VOTES = ["A", "B", "A", "C", "A", "B", "A", "C", "B", "A"]
SPOILED = {3, 8}
CHUNK = 4  # 10 ballots: 3 chunks


@dataclasses.dataclass
class Decrypted:
    settings: Settings
    factory: SessionFactory
    election_id: int


@pytest.fixture(scope="module")
def decrypted(
    bridge_db: str, factory: SessionFactory, amqp_url: str, server_secret: bytes, ray_local: None
) -> Iterator[Decrypted]:
    settings = bridge_settings(bridge_db, amqp_url, server_secret, lease_seconds=30)
    with factory.begin() as s:
        s.execute(text("TRUNCATE election, outbox RESTART IDENTITY CASCADE"))
    election_id, creds, tally_job = closed_election_with_tally(factory, "verify", VOTES, SPOILED, CHUNK)

    with pipeline(
        settings, factory, bridge=Executor(factory, RabbitMQBroker(amqp_url), settings, shutdown_grace=10)
    ):
        wait_completed(factory, tally_job)
        jobs = start_decryptions(factory, settings, server_secret, election_id, creds)
        for j in jobs:
            wait_completed(factory, j)
        with factory.begin() as s:
            combine = planning.create_combine_job(s, election_id).job_id
        wait_completed(factory, combine)
        with factory() as s:
            assert s.get(Election, election_id).state == "decrypted"  # type: ignore[union-attr]
        yield Decrypted(settings, factory, election_id)
    with factory.begin() as s:
        s.execute(text("TRUNCATE election, outbox RESTART IDENTITY CASCADE"))


def _verify(d: Decrypted) -> tuple[uuid.UUID, dict[str, Any]]:
    """A verify job run to its end; (job id, the status document)."""
    with d.factory.begin() as s:
        job = planning.create_verify_job(s, d.election_id, "admin")
        job_id, total = job.job_id, job.total_chunks
    assert total == 3 + 1  # the tally's chunks and the election row
    wait_completed(d.factory, job_id)
    with d.factory() as s:
        doc = status.job_document(s, status.get_job(s, job_id), stuck_after=600)
    return job_id, doc


def test_verify_job_of_a_decrypted_election_agrees_with_the_record_verifier(
    decrypted: Decrypted, tmp_path: Path
) -> None:
    from compute.record import open_record
    from compute.verify import verify_source

    job_id, doc = _verify(decrypted)
    v = doc["verification"]
    assert v["verified"] is True, v["problems"]
    assert (v["problem_count"], v["problems"], v["chunks_with_problems"], v["failed_ballots"]) == (
        0,
        [],
        [],
        [],
    )
    assert (v["ballots"], v["cast"], v["spoiled"], v["chunks"], v["guardians"]) == (10, 8, 2, 3, 3)
    with decrypted.factory() as s:
        assert len(s.scalars(select(VerifyReport).where(VerifyReport.job_id == job_id)).all()) == 4
        root = results.write_record_dir(s, decrypted.election_id, tmp_path)
    with open_record(root) as source:
        outcome = verify_source(source, batch=CHUNK)
    assert outcome.problems == []
    assert (outcome.ballots, outcome.cast, outcome.spoiled, outcome.guardians) == (
        v["ballots"],
        v["cast"],
        v["spoiled"],
        v["guardians"],
    )


@contextmanager
def _doctored_ballot(d: Decrypted, victim: str, original: str) -> Iterator[None]:
    """``victim``'s stored payload replaced by a clone of ``original``'s ballot under ``victim``'s id;
    put back at the end."""
    from compute.ballot import decode_submitted_ballot, encode_submitted_ballot

    with d.factory.begin() as s:
        rows = {b.object_id: b for b in s.scalars(select(Ballot).where(Ballot.election_id == d.election_id))}
        saved = rows[victim].payload
        clone = dataclasses.replace(decode_submitted_ballot(rows[original].payload), object_id=victim)
        rows[victim].payload = encode_submitted_ballot(clone)
    try:
        yield
    finally:
        with d.factory.begin() as s:
            s.execute(
                update(Ballot)
                .where(Ballot.election_id == d.election_id, Ballot.object_id == victim)
                .values(payload=saved)
            )


def test_a_cloned_ballot_is_a_completed_job_verified_false_naming_the_pair(decrypted: Decrypted) -> None:
    with _doctored_ballot(decrypted, victim="ballot-6", original="ballot-0"):  # both cast, both "A"
        _, doc = _verify(decrypted)
    assert doc["status"] == "COMPLETED"
    v = doc["verification"]
    assert v["verified"] is False and v["problem_count"] == len(v["problems"]) > 0
    clone = [p for p in v["problems"] if "repeats a selection ciphertext of ballot" in p]
    assert clone and "ballot-6" in clone[0] and "ballot-0" in clone[0], v["problems"]
    # The clone replaced ballot-6's own encryption: the encrypted tally is no longer the ballots' product.
    assert any(p.startswith("encrypted tally/contest-1/") for p in v["problems"]), v["problems"]
    assert (v["ballots"], v["cast"], v["spoiled"]) == (10, 8, 2)


def test_a_changed_encrypted_tally_is_verified_false_naming_the_selection(decrypted: Decrypted) -> None:
    with decrypted.factory.begin() as s:
        e = s.get(Election, decrypted.election_id)
        assert e is not None and e.encrypted_tally is not None
        saved = e.encrypted_tally
        doctored = {**saved, "contests": {k: dict(c) for k, c in saved["contests"].items()}}
        sels = {k: dict(x) for k, x in doctored["contests"]["contest-1"]["selections"].items()}
        # Selection A gets B's ciphertext: still a valid ciphertext, not the product of the ballots' A.
        sels["A"]["ciphertext"] = sels["B"]["ciphertext"]
        doctored["contests"]["contest-1"]["selections"] = sels
        e.encrypted_tally = doctored
    try:
        _, doc = _verify(decrypted)
    finally:
        with decrypted.factory.begin() as s:
            s.execute(
                update(Election).where(Election.id == decrypted.election_id).values(encrypted_tally=saved)
            )
    assert doc["status"] == "COMPLETED"
    v = doc["verification"]
    assert v["verified"] is False
    assert "encrypted tally/contest-1/A: not the product of the 8 cast ballots" in v["problems"], v[
        "problems"
    ]
    assert not any("encrypted tally/contest-1/B" in p for p in v["problems"]), v["problems"]


def test_a_verify_task_that_raises_is_retried_then_failed_not_a_verdict(decrypted: Decrypted) -> None:
    from tests.bridge.helpers_bridge import tasks_of

    d = decrypted
    with d.factory.begin() as s:
        e = s.get(Election, d.election_id)
        assert e is not None
        saved = e.context
        e.context = None  # every task's header fails to build: each attempt raises
    try:
        with d.factory.begin() as s:
            job_id = planning.create_verify_job(s, d.election_id).job_id
        wait_for(lambda: job_row(d.factory, job_id).status in ("COMPLETED", "FAILED"), timeout=120)
    finally:
        with d.factory.begin() as s:
            s.execute(update(Election).where(Election.id == d.election_id).values(context=saved))
    job = job_row(d.factory, job_id)
    assert job.status == "FAILED" and "has no keys yet" in (job.error_message or "")
    assert {(t.state, t.attempts) for t in tasks_of(d.factory, job_id)} == {
        ("FAILED", d.settings.max_attempts)
    }
    assert "verification" not in (job.metadata_ or {})
