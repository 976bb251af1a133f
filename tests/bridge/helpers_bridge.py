"""Row and broker helpers for the bridge tests (a plain module: conftest modules are not importable)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
from sqlalchemy import select, text

from bridge.brokers import rabbitmq as topology
from service.db.models import ChunkTask, Election, ElectionCenter, ElectionJob
from service.db.session import SessionFactory
from service.elections import ballots, elections
from service.jobs import planning
from service.security.sealing import KdfParams
from service.settings import Settings

# A real election's set-up (3 guardians, quorum 2, one candidate per ballot), cheap KDF for tests.
KDF = KdfParams(time_cost=1, memory_cost=64, parallelism=1)
PASS = {g: f"passphrase of {g} 123" for g in ("g1", "g2", "g3")}
# The server secret the custodial ceremony holds the private records under until the claims.
CEREMONY_SECRET = b"bridge-test-ceremony-secret-0123456789"


def make_tally_job(
    factory: SessionFactory,
    *,
    ballots: int,
    chunk_size: int,
    metadata: dict[str, Any] | None = None,
    priority: int = 0,
) -> tuple[int, uuid.UUID]:
    """A closed election with dummy ballots and its planned tally job (job, tasks, outbox rows)."""
    with factory.begin() as s:
        e = Election(name="bridge-test", state="closed", manifest={}, number_of_guardians=1, quorum=1)
        s.add(e)
        s.flush()
        s.execute(
            text(
                "INSERT INTO ballot (election_id, object_id, state, code, payload) "
                "SELECT :e, 'ballot-' || i, 1, md5(i::text), '\\x00'::bytea FROM generate_series(1, :n) i"
            ),
            {"e": e.id, "n": ballots},
        )
        job = planning.create_tally_job(s, e.id, chunk_size)
        if metadata:
            job.metadata_ = {**(job.metadata_ or {}), **metadata}
        job.priority = priority
        return e.id, job.job_id


def bridge_settings(database_url: str, amqp_url: str, server_secret: bytes, **overrides: Any) -> Settings:
    """The bridge tests' settings: quick retries, small tasks, four in flight (``overrides`` on top)."""
    base: dict[str, Any] = {
        "database_url": database_url,
        "amqp_url": amqp_url,
        "max_attempts": 3,
        "retry_backoff_seconds": 0.2,
        "lease_seconds": 5,
        "task_memory_mb": 64,
        "max_in_flight": 4,
        "server_secret": server_secret.decode(),
    }
    return Settings(**{**base, **overrides})


def job_row(factory: SessionFactory, job_id: uuid.UUID) -> ElectionJob:
    with factory() as s:
        return s.get(ElectionJob, job_id)  # type: ignore[return-value]


def tasks_of(factory: SessionFactory, job_id: uuid.UUID) -> list[ChunkTask]:
    with factory() as s:
        return list(s.scalars(select(ChunkTask).where(ChunkTask.job_id == job_id).order_by(ChunkTask.id)))


def election_row(factory: SessionFactory, election_id: int) -> Election:
    with factory() as s:
        return s.get(Election, election_id)  # type: ignore[return-value]


def chunk_numbers(factory: SessionFactory, job_id: uuid.UUID) -> dict[int, int]:
    """task id -> chunk number."""
    with factory() as s:
        rows = s.execute(
            select(ChunkTask.id, ElectionCenter.chunk_number)
            .join(ElectionCenter, ElectionCenter.id == ChunkTask.chunk_id)
            .where(ChunkTask.job_id == job_id)
        ).all()
    return {t: n for t, n in rows}


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def job_ended(factory: SessionFactory, job_id: uuid.UUID) -> Callable[[], bool]:
    return lambda: job_row(factory, job_id).status in ("COMPLETED", "FAILED")


def wait_completed(factory: SessionFactory, job_id: uuid.UUID, timeout: float = 300) -> None:
    """Wait for the job to end, and fail with its error unless it COMPLETED."""
    wait_for(job_ended(factory, job_id), timeout=timeout)
    job = job_row(factory, job_id)
    assert job.status == "COMPLETED", job.error_message


def drain_queue(amqp_url: str, queue: str) -> list[dict[str, Any]]:
    """Take every message out of ``queue`` (acked) and return the decoded bodies."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    out = []
    try:
        ch = conn.channel()
        while True:
            method, _props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append(json.loads(body))
    finally:
        conn.close()


def publish_raw(amqp_url: str, routing_key: str, body: dict[str, Any]) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(topology.EXCHANGE, routing_key, json.dumps(body).encode(), mandatory=True)
    finally:
        conn.close()


def queue_depth(amqp_url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


class InThread:
    """Run a ``run()``/``stop()`` object (relay, bridge, reconciler) in a thread for a test."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.thread = threading.Thread(target=obj.run, daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        return self.obj

    def __exit__(self, *exc: object) -> None:
        self.obj.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "did not stop"


def _plaintext(i: int, choice: str) -> dict[str, Any]:
    return {
        "object_id": f"ballot-{i}",
        "style_id": "ballot-style-1",
        "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": choice, "vote": 1}]}],
    }


def claim_all(
    factory: SessionFactory, election_id: int, secret: bytes, passphrases: dict[str, str]
) -> dict[str, Any]:
    """Each guardian's claim of its custodial credential file, as its own token would make it."""
    from service.elections import custody
    from service.security.auth import Principal, Role
    from service.security.kdf_gate import KdfGate

    gate = KdfGate(2, 5)
    return {
        g: custody.claim(
            factory,
            secret,
            gate,
            Principal(f"guardian:{election_id}:{g}", Role.GUARDIAN, election_id, g),
            election_id=election_id,
            guardian_id=g,
            passphrase=p,
            kdf=KDF,
        ).credentials
        for g, p in passphrases.items()
    }


def closed_election_with_tally(
    factory: SessionFactory,
    name: str,
    votes: list[str],
    spoiled: set[int],
    chunk_size: int,
    server_secret: bytes = CEREMONY_SECRET,
) -> tuple[int, dict[str, Any], uuid.UUID]:
    """A real election (custodial key ceremony of g1..g3, quorum 2, candidates A, B, C; each guardian then
    claims its file): ``votes[i]`` is ballot i's choice, the indexes in ``spoiled`` spoiled; closed, with
    its tally job planned. Returns (election id, the guardians' claimed credential files, the tally job
    id)."""
    with factory.begin() as s:
        e = elections.create_election(
            s, name=name, number_of_guardians=3, quorum=2, candidate_names=["A", "B", "C"]
        )
        election_id = e.id
        elections.run_key_ceremony(s, e.id, list(PASS), server_secret)
        elections.open_election(s, e.id)
    creds = claim_all(factory, election_id, server_secret, PASS)
    with factory.begin() as s:
        snap = ballots.snapshot_for_ballots(s, election_id)
        prepared = [
            ballots.decide(
                ballots.prepare_plaintext(snap, _plaintext(i, v)), "spoil" if i in spoiled else "cast"
            )
            for i, v in enumerate(votes)
        ]
        ballots.store(s, election_id, prepared)
        elections.close_election(s, election_id)
        tally_job = planning.create_tally_job(s, election_id, chunk_size).job_id
    return election_id, creds, tally_job


def start_decryptions(
    factory: SessionFactory,
    settings: Any,
    server_secret: bytes,
    election_id: int,
    creds: dict[str, Any],
    guardians: tuple[str, ...] = ("g1", "g2"),
    missing: tuple[str, ...] = ("g3",),
) -> list[uuid.UUID]:
    """Each guardian's partial decryption and its compensated jobs for the missing ones: every job id."""
    from service.elections import decryption
    from service.security.kdf_gate import kdf_gate

    jobs: list[uuid.UUID] = []
    for g in guardians:
        start = decryption.start_decryption(
            factory,
            server_secret,
            kdf_gate(settings),
            election_id=election_id,
            guardian_id=g,
            credentials=creds[g],
            passphrase=PASS[g],
            missing_guardian_ids=list(missing),
        )
        assert start.partial_job is not None
        jobs += [start.partial_job.job_id] + [j.job_id for j in start.compensated_jobs]
    return jobs
