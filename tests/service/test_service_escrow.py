"""Key escrow of running decryption jobs against the real PostgreSQL: one per job, the least key material,
erased when the job completes, kept for a re-drive while FAILED, expired after the retention, erased on an
operator's command."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from gmpy2 import mpz
from helpers_service import complete_tally, make_election
from sqlalchemy import Engine, func, select, update

from compute.guardian import CompensationKey, DecryptionKey
from service.db.models import ChunkTask, ElectionJob, GuardianKeyEscrow
from service.db.session import session_factory, transaction
from service.elections import escrow
from service.errors import Conflict
from service.jobs import planning, transitions
from service.jobs.redrive import redrive_job
from tests.cli.run import amarvote

pytestmark = pytest.mark.services
SECRET = b"escrow-test-server-secret-0123456789abcdef"


def _jobs(engine: Engine) -> tuple[int, ElectionJob, ElectionJob]:
    """An election with g1's partial job and its compensated job for g3, each with its escrow."""
    eid = make_election(engine, ballots=4, guardians=3, quorum=2)
    with transaction(engine) as s:
        tally = planning.create_tally_job(s, eid, 2, "admin")
    complete_tally(engine, tally.job_id)
    with transaction(engine) as s:
        partial = planning.create_partial_decryption_job(s, eid, "g1", "g1")
        (child,) = planning.create_compensated_decryption_jobs(s, partial.job_id, ["g3"], "g1")
        escrow.store_escrow(s, SECRET, partial, DecryptionKey("g1", 1, mpz(12345), mpz(67890)))
        escrow.store_escrow(s, SECRET, child, CompensationKey("g1", 1, mpz(67890), "g3", mpz(424242)))
    return eid, partial, child


def _escrows(engine: Engine) -> set[uuid.UUID]:
    with session_factory(engine)() as s:
        return set(s.scalars(select(GuardianKeyEscrow.job_id)))


def test_each_job_holds_only_its_own_key_and_others_do_not_open(engine: Engine) -> None:
    _, partial, child = _jobs(engine)
    with session_factory(engine)() as s:
        assert escrow.load_key(s, partial.job_id, SECRET) == DecryptionKey("g1", 1, mpz(12345), mpz(67890))
        key = escrow.load_key(s, child.job_id, SECRET)
        assert isinstance(key, CompensationKey) and key.coordinate == 424242
        assert "secret_key" not in key.to_json(), "a compensated job never holds the guardian's own key"
        with pytest.raises(Exception, match="does not open"):
            escrow.load_key(s, partial.job_id, b"another-server-secret-0123456789abcdefgh")
    # A sealed row moved under another job does not open (the job id is bound as associated data).
    with transaction(engine) as s:
        row = s.scalars(select(GuardianKeyEscrow).where(GuardianKeyEscrow.job_id == child.job_id)).one()
        sealed = row.sealed
        s.execute(
            update(GuardianKeyEscrow).where(GuardianKeyEscrow.job_id == partial.job_id).values(sealed=sealed)
        )
    with session_factory(engine)() as s, pytest.raises(Exception, match="does not open"):
        escrow.load_key(s, partial.job_id, SECRET)


def test_completing_a_job_erases_its_escrow_only(engine: Engine) -> None:
    _, partial, child = _jobs(engine)
    with session_factory(engine).begin() as s:
        task_ids = list(s.scalars(select(ChunkTask.id).where(ChunkTask.job_id == partial.job_id)))
    for task_id in task_ids:
        with session_factory(engine).begin() as s:
            assert transitions.complete(s, task_id, lambda *_: None) == transitions.Outcome.DONE
    remaining = _escrows(engine)
    assert partial.job_id not in remaining and child.job_id in remaining


def test_a_failed_job_keeps_its_escrow_for_the_retention_then_loses_it(engine: Engine) -> None:
    _, partial, child = _jobs(engine)
    now = datetime.now(UTC)
    with transaction(engine) as s:
        s.execute(
            update(ElectionJob)
            .where(ElectionJob.job_id == partial.job_id)
            .values(status="FAILED", completed_at=now - timedelta(hours=2), failed_chunks=1)
        )
    with transaction(engine) as s:
        escrow.erase_expired(s, timedelta(hours=3), now)  # within the retention: kept
    assert {partial.job_id, child.job_id} <= _escrows(engine)
    with transaction(engine) as s:
        assert escrow.erase_expired(s, timedelta(hours=1), now) >= 1  # past it: gone
    assert partial.job_id not in _escrows(engine) and child.job_id in _escrows(engine), (
        "a live job keeps its own"
    )
    # And a re-drive of that job is refused, naming why, instead of failing every chunk again.
    with pytest.raises(Conflict, match="escrow was erased"), transaction(engine) as s:
        redrive_job(s, partial.job_id)


def test_the_escrow_sweeper_erases_expired_escrows(engine: Engine) -> None:
    from bridge.escrow_sweeper import sweep_escrows

    _, partial, _ = _jobs(engine)
    with transaction(engine) as s:
        s.execute(
            update(ElectionJob)
            .where(ElectionJob.job_id == partial.job_id)
            .values(status="FAILED", completed_at=datetime.now(UTC) - timedelta(days=2), failed_chunks=1)
        )
    assert sweep_escrows(session_factory(engine), retention=timedelta(hours=24)) >= 1
    assert partial.job_id not in _escrows(engine)


def test_the_operator_command_erases_an_elections_escrows(db_url: str, engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    eid, partial, child = _jobs(engine)
    other, other_partial, _ = _jobs(engine)
    env = {"AMARVOTE_DATABASE_URL": db_url}
    r = amarvote("escrow", "erase", str(eid), "--yes", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"2 key escrow(s) of election {eid} erased" in r.stdout
    left = _escrows(engine)
    assert not {partial.job_id, child.job_id} & left and other_partial.job_id in left
    missing = amarvote("escrow", "erase", "999999999", "--yes", cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "does not exist" in missing.stdout
    with session_factory(engine)() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(GuardianKeyEscrow)
                .where(GuardianKeyEscrow.election_id == other)
            )
            == 2
        )
