"""The four flows chained with real ElectionGuard arithmetic, through RabbitMQ, the bridge and Ray.

3 guardians, quorum 2, guardian g3 missing; 12 ballots (2 spoiled) in chunks of 5. The counts the
combine publishes must equal the plaintext votes, every spoiled ballot must decrypt to what was
encrypted, only the aggregate and the spoiled ballots are decrypted, and the escrowed keys must be gone.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import func, select

from bridge.brokers.rabbitmq import RabbitMQBroker
from bridge.executor import Executor
from service.db.models import ElectionCenter, GuardianKeyEscrow
from service.elections import results
from service.jobs import planning
from tests.bridge.helpers_bridge import (
    PASS,
    closed_election_with_tally,
    election_row,
    job_row,
    start_decryptions,
    wait_for,
)
from tests.bridge.test_bridge_flow import pipeline

pytestmark = pytest.mark.services
VOTES = ["A", "B", "A", "C", "A", "B", "A", "C", "B", "A", "C", "A"]
SPOILED = {3, 8}  # indexes of spoiled ballots


class Recording(RabbitMQBroker):
    """The real broker, keeping every message body it receives."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bodies: list[str] = []

    def _on_message(self, channel, method, props, body: bytes) -> None:  # type: ignore[no-untyped-def]
        self.bodies.append(body.decode())
        super()._on_message(channel, method, props, body)


def test_tally_decrypt_compensate_combine(settings, factory, ray_local, clean, server_secret) -> None:  # type: ignore[no-untyped-def]
    election_id, creds, tally_job = closed_election_with_tally(factory, "crypto", VOTES, SPOILED, 5)

    # The real bodies (bridge.tasks.DEFAULT_BODIES), not the counting stand-in.
    broker = Recording(settings.amqp_url)
    real_bodies = Executor(factory, broker, settings, shutdown_grace=10)
    with pipeline(settings, factory, bridge=real_bodies):
        wait_for(lambda: job_row(factory, tally_job).status == "COMPLETED", timeout=120)
        e = election_row(factory, election_id)
        assert e.state == "tallied" and e.encrypted_tally is not None
        with factory() as s:
            election_chunk = s.scalars(
                select(ElectionCenter).where(
                    ElectionCenter.election_id == election_id, ElectionCenter.kind == "election"
                )
            ).one()
            assert election_chunk.cast_count == len(VOTES) - len(SPOILED)
            assert sorted(election_chunk.spoiled_ids) == sorted(f"ballot-{i}" for i in SPOILED)

        jobs = start_decryptions(factory, settings, server_secret, election_id, creds)
        assert len(jobs) == 4
        wait_for(
            lambda: all(job_row(factory, j).status in ("COMPLETED", "FAILED") for j in jobs), timeout=240
        )
        assert [job_row(factory, j).status for j in jobs] == ["COMPLETED"] * 4, [
            job_row(factory, j).error_message for j in jobs
        ]
        with factory() as s:
            assert s.scalar(select(func.count()).select_from(GuardianKeyEscrow)) == 0  # erased at the end

        with factory.begin() as s:
            combine_job = planning.create_combine_job(s, election_id).job_id
        wait_for(lambda: job_row(factory, combine_job).status in ("COMPLETED", "FAILED"), timeout=120)
        assert job_row(factory, combine_job).status == "COMPLETED", job_row(
            factory, combine_job
        ).error_message

    # Every message of the four flows as RabbitMQ delivered it: three ids, nothing else (no ballot, key,
    # passphrase or secret).
    bodies = broker.bodies
    assert len(bodies) >= 3 + 4 * 2 + 2  # 3 tally chunks; 2 decryption units (1 slice, 1 spoiled run)
    for raw in bodies:
        body = json.loads(raw)
        assert set(body) == {"job_id", "task_id", "operation"} and len(raw) < 120
        assert server_secret.decode() not in raw and not any(p in raw for p in PASS.values())

    e = election_row(factory, election_id)
    assert e.state == "decrypted"
    cast = Counter(v for i, v in enumerate(VOTES) if i not in SPOILED)
    counts = {sid: s["tally"] for sid, s in e.result["contests"]["contest-1"]["selections"].items()}
    assert counts == {c: cast.get(c, 0) for c in "ABC"}
    assert "spoiled_ballots" not in e.result  # they stay in their units, however many there are
    with factory() as s:
        spoiled = dict(results.spoiled_decryptions(s, election_id))
    assert set(spoiled) == {f"ballot-{i}" for i in SPOILED}
    for i in SPOILED:
        sel = spoiled[f"ballot-{i}"]["contests"]["contest-1"]["selections"]
        assert {sid: s["tally"] for sid, s in sel.items()} == {c: int(c == VOTES[i]) for c in "ABC"}
