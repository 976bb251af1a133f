"""Job creation against the real PostgreSQL: chunk planning, tasks, outbox, and every refusal."""

from __future__ import annotations

import time
import uuid

import pytest
from helpers_service import complete_tally, insert_dummy_ballots, make_election, row_counts
from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from service.db.models import (
    Ballot,
    ChunkTask,
    CompensatedShare,
    DecryptionShare,
    ElectionCenter,
    ElectionJob,
    Outbox,
)
from service.db.session import session_factory, transaction
from service.errors import Conflict, Invalid, NotFound
from service.jobs import planning, queries


def _tally(engine: Engine, election_id: int, chunk_size: int = 5) -> ElectionJob:
    with transaction(engine) as s:
        return planning.create_tally_job(s, election_id, chunk_size, created_by="admin")


def _complete(engine: Engine, job_id: uuid.UUID) -> None:
    """Stand-in for the bridge: the tally COMPLETED with an aggregate of 5 selections."""
    complete_tally(engine, job_id, selections=5)


SIZES = planning.UnitSizes(slice_selections=2, spoiled_chunk_size=2)  # 5 selections: 3 slices


def _refused(engine: Engine, exc: type[Exception], fn, *args, match: str = "") -> None:  # type: ignore[no-untyped-def]
    before = row_counts(engine)
    with pytest.raises(exc, match=match), transaction(engine) as s:
        fn(s, *args)
    assert row_counts(engine) == before


def test_tally_plans_chunks_tasks_and_outbox(engine: Engine) -> None:
    eid = make_election(engine, ballots=12, spoiled_every=4)
    job = _tally(engine, eid, chunk_size=5)
    with session_factory(engine)() as s:
        chunks = s.scalars(
            select(ElectionCenter)
            .where(ElectionCenter.election_id == eid)
            .order_by(ElectionCenter.chunk_number)
        ).all()
        seqs = s.scalars(select(Ballot.seq).where(Ballot.election_id == eid).order_by(Ballot.seq)).all()
        assert [c.chunk_number for c in chunks] == [0, 1, 2, 3]
        assert [c.kind for c in chunks] == ["election", "chunk", "chunk", "chunk"]
        assert [c.ballot_count for c in chunks] == [12, 5, 5, 2]
        assert [(c.first_seq, c.last_seq) for c in chunks[1:]] == [
            (seqs[0], seqs[4]),
            (seqs[5], seqs[9]),
            (seqs[10], seqs[11]),
        ]
        stored = s.get(ElectionJob, job.job_id)
        assert stored is not None
        assert (stored.operation_type, stored.status, stored.total_chunks) == ("TALLY", "QUEUED", 3)
        assert stored.processed_chunks == stored.failed_chunks == 0
        assert stored.metadata_["election_chunk_id"] == chunks[0].id
        tasks = s.scalars(
            select(ChunkTask).where(ChunkTask.job_id == job.job_id).order_by(ChunkTask.id)
        ).all()
        assert [t.chunk_id for t in tasks] == [c.id for c in chunks[1:]]
        assert all(t.state == "PENDING" and t.attempts == 0 for t in tasks)
        msgs = s.scalars(select(Outbox).where(Outbox.job_id == job.job_id)).all()
        assert sorted(m.task_id for m in msgs) == [t.id for t in tasks]
        for m in msgs:
            assert m.operation == "TALLY"
            assert m.sent_at is None


def test_planning_is_deterministic(engine: Engine, session: Session) -> None:
    eid = make_election(engine, ballots=23)
    a = planning.plan_ballot_chunks(session, eid, 7)
    b = planning.plan_ballot_chunks(session, eid, 7)
    assert a == b and [c.ballot_count for c in a] == [7, 7, 7, 2]


@pytest.mark.parametrize(
    ("state", "ballots", "size", "exc", "match"),
    [
        ("open", 3, 5, Conflict, "only a closed election"),
        ("setup", 3, 5, Conflict, "only a closed election"),
        ("closed", 0, 5, Conflict, "no ballots"),
        ("closed", 3, 0, Invalid, "chunk_size"),
    ],
)
def test_tally_refusals_write_nothing(
    engine: Engine, state: str, ballots: int, size: int, exc, match
) -> None:  # type: ignore[no-untyped-def]
    eid = make_election(engine, state=state, ballots=ballots)
    _refused(engine, exc, planning.create_tally_job, eid, size, "admin", match=match)


def test_tally_unknown_election_and_duplicate(engine: Engine) -> None:
    _refused(engine, NotFound, planning.create_tally_job, 10**9, 5, "admin", match="does not exist")
    eid = make_election(engine, ballots=3)
    _tally(engine, eid)
    _refused(engine, Conflict, planning.create_tally_job, eid, 5, "admin", match="already has a tally job")


def _tallied(
    engine: Engine, ballots: int = 7, guardians: int = 3, quorum: int = 2, spoiled_every: int = 2
) -> tuple[int, ElectionJob]:
    """7 ballots in chunks of 3 (3 chunks), ballots 2, 4 and 6 spoiled: 2 spoiled runs of 2 at most."""
    eid = make_election(
        engine, ballots=ballots, guardians=guardians, quorum=quorum, spoiled_every=spoiled_every
    )
    job = _tally(engine, eid, chunk_size=3)
    return eid, job


def _partial(s: Session, eid: int, guardian: str) -> ElectionJob:
    return planning.create_partial_decryption_job(s, eid, guardian, guardian, SIZES)


def test_decryption_units_are_the_aggregate_slices_and_spoiled_runs_never_a_chunk(engine: Engine) -> None:
    eid, tally = _tallied(engine)
    _refused(engine, Conflict, planning.create_partial_decryption_job, eid, "g1", "g1", SIZES, match="QUEUED")
    _complete(engine, tally.job_id)
    _refused(
        engine, NotFound, planning.create_partial_decryption_job, eid, "nobody", "x", SIZES, match="nobody"
    )
    with transaction(engine) as s:
        job = _partial(s, eid, "g1")
    with session_factory(engine)() as s:
        units = s.scalars(
            select(ElectionCenter)
            .where(ElectionCenter.tally_job_id == tally.job_id, ElectionCenter.kind.in_(["slice", "spoiled"]))
            .order_by(ElectionCenter.kind, ElectionCenter.chunk_number)
        ).all()
        assert [(u.kind, u.chunk_number) for u in units] == [
            ("slice", 1),
            ("slice", 2),
            ("slice", 3),
            ("spoiled", 1),
            ("spoiled", 2),
        ]
        sliced = [
            sid for u in units[:3] for c in u.encrypted_tally["contests"].values() for sid in c["selections"]
        ]
        assert sorted(sliced) == [f"c0-s{i}" for i in range(5)], "every selection in exactly one slice"
        spoiled_seqs = s.scalars(
            select(Ballot.seq).where(Ballot.election_id == eid, Ballot.state == 2).order_by(Ballot.seq)
        ).all()
        assert [(u.first_seq, u.last_seq, u.ballot_count) for u in units[3:]] == [
            (spoiled_seqs[0], spoiled_seqs[1], 2),
            (spoiled_seqs[2], spoiled_seqs[2], 1),
        ]
        tasks = s.scalars(select(ChunkTask.chunk_id).where(ChunkTask.job_id == job.job_id)).all()
        assert sorted(tasks) == sorted(u.id for u in units)
        chunk_ids = set(queries.tally_chunk_ids(s, tally.job_id, include_election=True))
        assert not chunk_ids & set(tasks), "no decryption task on a tally chunk or the election row"
        stored = s.get(ElectionJob, job.job_id)
        assert stored is not None and stored.total_chunks == 5 and stored.guardian_id == "g1"
        keys = set(s.scalars(select(Outbox.operation).where(Outbox.job_id == job.job_id)))
        assert keys == {"PARTIAL_DECRYPTION"}
    _refused(
        engine, Conflict, planning.create_partial_decryption_job, eid, "g1", "g1", SIZES, match="already"
    )
    # Planned once per tally: a second guardian's job reuses the units, whatever sizes it asks for.
    with transaction(engine) as s:
        other = planning.create_partial_decryption_job(s, eid, "g2", "g2", planning.UnitSizes(1, 1))
        assert other.total_chunks == 5


def test_one_unit_per_hundred_selections_by_default(engine: Engine) -> None:
    eid = make_election(engine, ballots=4)
    tally = _tally(engine, eid, chunk_size=1)
    complete_tally(engine, tally.job_id, selections=250)
    with transaction(engine) as s:
        job = planning.create_partial_decryption_job(s, eid, "g1", "g1")
        assert job.total_chunks == 3  # 4 chunks of 1 ballot, 250 selections, no spoiled ballot


def test_compensated_jobs_are_children_with_one_task_per_unit(engine: Engine) -> None:
    eid, tally = _tallied(engine, guardians=5, quorum=3)
    _complete(engine, tally.job_id)
    with transaction(engine) as s:
        parent = _partial(s, eid, "g1")
        _partial(s, eid, "g2")
    create = planning.create_compensated_decryption_jobs
    _refused(engine, Invalid, create, parent.job_id, ["g1"], "g1", match="itself")
    _refused(engine, Invalid, create, parent.job_id, [], "g1", match="no missing")
    _refused(engine, Conflict, create, parent.job_id, ["g3", "g4", "g5"], "g1", match="at most 2")
    _refused(engine, Conflict, create, parent.job_id, ["g2"], "g1", match="not missing")
    _refused(engine, NotFound, create, parent.job_id, ["g9"], "g1", match="g9")
    _refused(engine, NotFound, create, uuid.uuid4(), ["g4"], "g1", match="does not exist")
    with transaction(engine) as s:
        children = create(s, parent.job_id, ["g4", "g5"], "g1")
    assert [c.missing_guardian_id for c in children] == ["g4", "g5"]
    with session_factory(engine)() as s:
        for c in children:
            stored = s.get(ElectionJob, c.job_id)
            assert stored is not None
            assert (stored.parent_job_id, stored.guardian_id, stored.total_chunks) == (parent.job_id, "g1", 5)
            assert stored.operation_type == "COMPENSATED_DECRYPTION"
            bodies = s.scalars(select(Outbox).where(Outbox.job_id == c.job_id)).all()
            assert len(bodies) == 5 and {b.operation for b in bodies} == {"COMPENSATED_DECRYPTION"}
    _refused(engine, Conflict, create, parent.job_id, ["g4"], "g1", match="already compensates")


def _share_all(
    engine: Engine, tally: ElectionJob, job: ElectionJob, guardian: str, missing: str | None = None
) -> None:
    with transaction(engine) as s:
        for cid in queries.decryption_unit_ids(s, tally.job_id):
            if missing is None:
                s.add(DecryptionShare(chunk_id=cid, guardian_id=guardian, job_id=job.job_id, share={}))
            else:
                s.add(
                    CompensatedShare(
                        chunk_id=cid,
                        guardian_id=guardian,
                        missing_guardian_id=missing,
                        job_id=job.job_id,
                        share={},
                    )
                )
        s.execute(update(ElectionJob).where(ElectionJob.job_id == job.job_id).values(status="COMPLETED"))


def test_combine_needs_quorum_and_every_compensated_share(engine: Engine) -> None:
    eid, tally = _tallied(engine, guardians=3, quorum=2)
    _refused(engine, Conflict, planning.create_combine_job, eid, "admin", match="not COMPLETED")
    _complete(engine, tally.job_id)
    with transaction(engine) as s:
        p1 = _partial(s, eid, "g1")
    _refused(engine, Conflict, planning.create_combine_job, eid, "admin", match="still QUEUED")
    _share_all(engine, tally, p1, "g1")
    _refused(engine, Conflict, planning.create_combine_job, eid, "admin", match="quorum not met: 1 of the 2")
    with transaction(engine) as s:
        p2 = _partial(s, eid, "g2")
        (c1,) = planning.create_compensated_decryption_jobs(s, p1.job_id, ["g3"], "g1")
        (c2,) = planning.create_compensated_decryption_jobs(s, p2.job_id, ["g3"], "g2")
    _share_all(engine, tally, p2, "g2")
    _share_all(engine, tally, c1, "g1", missing="g3")
    with transaction(engine) as s:
        s.execute(update(ElectionJob).where(ElectionJob.job_id == c2.job_id).values(status="FAILED"))
    _refused(engine, Conflict, planning.create_combine_job, eid, "admin", match="g2→g3")
    _share_all(engine, tally, c2, "g2", missing="g3")
    with transaction(engine) as s:
        job = planning.create_combine_job(s, eid, "admin")
    with session_factory(engine)() as s:
        stored = s.get(ElectionJob, job.job_id)
        assert stored is not None and stored.total_chunks == 5
        assert stored.metadata_["available_guardian_ids"] == ["g1", "g2"]
        assert stored.metadata_["missing_guardian_ids"] == ["g3"]
        keys = set(s.scalars(select(Outbox.operation).where(Outbox.job_id == job.job_id)))
        assert keys == {"COMBINE_DECRYPTION"}
    _refused(engine, Conflict, planning.create_combine_job, eid, "admin", match="already has a combine job")


def test_tally_creation_for_100k_ballots_is_fast(engine: Engine) -> None:
    eid = make_election(engine)
    with transaction(engine) as s:
        insert_dummy_ballots(s, eid, 100_000)
    with transaction(engine) as s:
        s.execute(text("ANALYZE ballot"))
    t0 = time.perf_counter()
    job = _tally(engine, eid, chunk_size=5000)
    elapsed = time.perf_counter() - t0
    assert job.total_chunks == 20
    assert elapsed < 1.0, f"tally job creation took {elapsed:.3f}s"


def test_index_walk_plan_equals_window_plan_with_interleaved_elections(engine: Engine) -> None:
    """The PostgreSQL plan (recursive index walk) and the SQLite one (window) agree, with gaps in seq
    from another election's ballots inserted in between."""
    a = make_election(engine)
    b = make_election(engine)
    with transaction(engine) as s:
        for i in range(5):
            insert_dummy_ballots(s, a, 7 + i)
            s.execute(
                text(
                    "INSERT INTO ballot (election_id, object_id, state, code, payload)"
                    " SELECT :e, 'other-' || :i || '-' || g, 1, 'c-' || :i || '-' || g, '\\x00'::bytea"
                    " FROM generate_series(1, 3) g"
                ),
                {"e": b, "i": i},
            )
            s.execute(
                text(
                    "UPDATE ballot SET object_id = object_id || '-' || seq, code = code || '-' || seq"
                    " WHERE election_id = :e"
                ),
                {"e": a},
            )
    with session_factory(engine)() as s:
        for size in (1, 4, 7, 45, 1000):
            walk = planning.plan_ballot_chunks(s, a, size)
            window = [
                planning.PlannedChunk(int(r[0]), int(r[1]), int(r[2]), int(r[3]))
                for r in s.execute(
                    text(planning._PLAN_WINDOW + "SELECT * FROM bounds ORDER BY chunk_number"),
                    {"size": size, "election_id": a},
                )
            ]
            assert walk == window and sum(c.ballot_count for c in walk) == 45


def test_concurrent_tally_creation_makes_one_job(engine: Engine) -> None:
    """The election row lock serialises job creation: of 6 simultaneous requests, one wins."""
    from concurrent.futures import ThreadPoolExecutor

    eid = make_election(engine, ballots=50)

    def attempt(_: int) -> str:
        try:
            _tally(engine, eid, chunk_size=10)
            return "created"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(6) as pool:
        outcomes = sorted(pool.map(attempt, range(6)))
    assert outcomes == ["conflict"] * 5 + ["created"]
    with session_factory(engine)() as s:
        assert len(s.scalars(select(ElectionCenter).where(ElectionCenter.election_id == eid)).all()) == 6


# ---------------------------------------------------------------------------------------------- verify


def _set_state(engine: Engine, election_id: int, state: str) -> None:
    from service.db.models import Election

    with transaction(engine) as s:
        s.execute(update(Election).where(Election.id == election_id).values(state=state))


def test_verify_plans_a_task_per_tally_chunk_and_one_on_the_election_row(engine: Engine) -> None:
    eid = make_election(engine, ballots=12, spoiled_every=4)
    _refused(engine, Conflict, planning.create_verify_job, eid, match="only a decrypted election")
    tally = _tally(engine, eid, chunk_size=5)  # 3 chunks
    _complete(engine, tally.job_id)
    _set_state(engine, eid, "tallied")
    _refused(engine, Conflict, planning.create_verify_job, eid, match="is tallied")
    _refused(engine, NotFound, planning.create_verify_job, 10**9)
    _set_state(engine, eid, "decrypted")

    with transaction(engine) as s:
        job = planning.create_verify_job(s, eid, created_by="admin")
        job_id, total = job.job_id, job.total_chunks
        assert job.operation_type == "VERIFY" and job.status == "QUEUED"
        assert job.metadata_ == {"tally_job_id": str(tally.job_id)}
    with session_factory(engine)() as s:
        units = s.execute(
            select(ElectionCenter.kind, ElectionCenter.chunk_number, ElectionCenter.tally_job_id)
            .join(ChunkTask, ChunkTask.chunk_id == ElectionCenter.id)
            .where(ChunkTask.job_id == job_id)
            .order_by(ElectionCenter.kind, ElectionCenter.chunk_number)
        ).all()
        assert [(k, n) for k, n, _ in units] == [("chunk", 1), ("chunk", 2), ("chunk", 3), ("election", 0)]
        assert {t for _, _, t in units} == {tally.job_id}
        assert total == 4
        messages = s.execute(select(Outbox.operation, Outbox.task_id).where(Outbox.job_id == job_id)).all()
        tasks = s.scalars(select(ChunkTask.id).where(ChunkTask.job_id == job_id)).all()
        assert sorted(t for _, t in messages) == sorted(tasks)
        assert {op for op, _ in messages} == {"VERIFY"}

    # A live verify job of the election refuses another; once it has ended, verifying again is allowed.
    _refused(engine, Conflict, planning.create_verify_job, eid, match="already has a verify job")
    with transaction(engine) as s:
        s.execute(update(ElectionJob).where(ElectionJob.job_id == job_id).values(status="COMPLETED"))
    with transaction(engine) as s:
        again = planning.create_verify_job(s, eid)
        assert again.total_chunks == 4 and again.job_id != job_id
