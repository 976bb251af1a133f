"""Migrations: an empty PostgreSQL database upgrades to head, and head matches the models exactly."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, text

from compute.ballot import encode_submitted_ballot
from compute.fingerprints import selection_fingerprints
from compute.group import to_hex
from service.db import migrate
from service.db.models import Base
from tests.compute import ballot_helpers

pytestmark = pytest.mark.services
PG_ADMIN_URL = os.environ.get("AMARVOTE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _backfill_batch() -> int:
    path = migrate.MIGRATIONS_DIR / "versions" / "0003_ballot_fingerprints.py"
    spec = importlib.util.spec_from_file_location("fingerprints_migration", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.BATCH)


BACKFILL_BATCH = _backfill_batch()


@pytest.fixture()
def empty_pg() -> str:
    name = f"amarvote_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _head() -> str:
    head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
    assert head is not None
    return head


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            mc = MigrationContext.configure(c, opts={"compare_type": True})
            return compare_metadata(mc, Base.metadata)
    finally:
        engine.dispose()


def _raw_elections(c: Connection, n: int) -> list[int]:
    """``n`` bare open election rows written with SQL (the models may be ahead of the schema tested)."""
    sql = text(
        "INSERT INTO election (name, state, manifest, manifest_version, number_of_guardians, quorum)"
        " VALUES ('m', 'open', '{}', 1, 1, 1) RETURNING id"
    )
    return [c.execute(sql).scalar_one() for _ in range(n)]


def test_upgrade_empty_postgres_creates_every_table(empty_pg: str) -> None:
    migrate.upgrade(empty_pg)
    assert migrate.current_revision(empty_pg) == _head()
    engine = create_engine(empty_pg)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert _diff(empty_pg) == []


def test_upgrade_is_idempotent_and_downgrade_empties(empty_pg: str) -> None:
    migrate.upgrade(empty_pg)
    migrate.upgrade(empty_pg)  # already at head: nothing to do, no error
    migrate.downgrade(empty_pg, "base")
    engine = create_engine(empty_pg)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_diff_detects_a_drifted_schema(empty_pg: str) -> None:
    """The comparison can fail: a column missing from the database shows up as a difference."""
    migrate.upgrade(empty_pg)
    engine = create_engine(empty_pg)
    with engine.begin() as c:
        c.execute(text("ALTER TABLE chunk_task DROP COLUMN not_before"))
    engine.dispose()
    assert any("not_before" in repr(d) for d in _diff(empty_pg))


def test_upgrade_sqlite(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'a.sqlite3'}"
    migrate.upgrade(url)
    assert _diff(url) == []


def test_upgrade_backfills_fingerprints_of_stored_ballots(
    empty_pg: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Ballots stored before the fingerprints existed get theirs; clones among them are logged and left
    without the repeated fingerprints (the earlier ballot keeps them) instead of failing the upgrade."""
    migrate.upgrade(empty_pg, "0001")
    e = ballot_helpers.make_election()
    b0, b1, b2, fresh = ballot_helpers.submitted_ballots(e, 4)
    mix = ballot_helpers.clone(fresh, "mix", (fresh.contests[0], b1.contests[1]))  # partial clone of b1
    fillers = [(f"filler-{i}", b2) for i in range(BACKFILL_BATCH)]  # clones of one ballot, past a batch
    first = [("b0", b0), ("b1", b1), ("mix", mix), *fillers, ("copy", ballot_helpers.clone(b0, "copy"))]
    engine = create_engine(empty_pg)
    try:
        with engine.begin() as c:
            e1, e2 = _raw_elections(c, 2)
            rows = [(e1, oid, encode_submitted_ballot(b)) for oid, b in first]
            rows += [(e2, "b1-elsewhere", encode_submitted_ballot(b1)), (e1, "garbage", b"\0")]
            c.execute(
                text(
                    "INSERT INTO ballot (election_id, object_id, state, code, payload)"
                    " VALUES (:e, :o, 1, :c, :p)"
                ),
                [{"e": eid, "o": oid, "c": f"c-{oid}", "p": payload} for eid, oid, payload in rows],
            )
        with caplog.at_level(logging.INFO, logger="amarvote.migrations"):
            migrate.upgrade(empty_pg)
        assert migrate.current_revision(empty_pg) == _head()
        with engine.connect() as c:
            stored = c.execute(
                text(
                    "SELECT f.election_id, b.object_id, f.fingerprint FROM ballot_ciphertext f"
                    " JOIN ballot b ON b.seq = f.ballot_seq"
                )
            ).all()
    finally:
        engine.dispose()
    held: dict[tuple[int, str], set[bytes]] = {}
    for eid, oid, fp in stored:
        held.setdefault((eid, oid), set()).add(bytes(fp))
    fps = {name: set(selection_fingerprints(b)) for name, b in [("b0", b0), ("b1", b1), ("b2", b2)]}
    assert held == {
        (e1, "b0"): fps["b0"],
        (e1, "b1"): fps["b1"],
        (e1, "mix"): set(selection_fingerprints(mix)) - fps["b1"],  # its fresh contest only
        (e1, "filler-0"): fps["b2"],
        (e2, "b1-elsewhere"): fps["b1"],  # another election: not a repeat
    }
    log = caplog.text
    assert "ballot mix repeats a selection ciphertext of ballot b1" in log
    assert "ballot filler-1 repeats a selection ciphertext of ballot filler-0" in log
    # Found in an earlier batch's rows, not in the batch being decoded.
    assert "ballot copy repeats a selection ciphertext of ballot b0" in log
    assert "ballot garbage does not decode" in log


def test_upgrade_removes_sub_tally_plaintexts_and_ends_chunk_by_chunk_decryptions(empty_pg: str) -> None:
    """Migration 0002: no chunk keeps a decryption or a share; the aggregate's decryption stays; decryption
    jobs of an election not yet decrypted (planned chunk by chunk) end FAILED with a note; the old
    escrows (whole private records) are erased."""
    migrate.upgrade(empty_pg, "0001")
    engine = create_engine(empty_pg)
    plain = '{"object_id": "election-results", "contests": {}}'
    try:
        with engine.begin() as c:
            eids = {}
            for state in ("tallied", "decrypted"):
                eids[state] = c.execute(
                    text(
                        "INSERT INTO election (name, state, manifest, manifest_version, number_of_guardians,"
                        " quorum, result) VALUES (:s, :s, '{}', 1, 1, 1, CAST(:r AS JSONB)) RETURNING id"
                    ),
                    {"s": state, "r": plain if state == "decrypted" else None},
                ).scalar_one()
                tally, partial = uuid.uuid4(), uuid.uuid4()
                for job, op, status in ((tally, "TALLY", "COMPLETED"), (partial, "PARTIAL_DECRYPTION", "")):
                    c.execute(
                        text(
                            "INSERT INTO election_job (job_id, election_id, operation_type, status,"
                            " total_chunks, processed_chunks, failed_chunks, guardian_id)"
                            " VALUES (:j, :e, :o, :s, 3, :p, 0, 'g1')"
                        ),
                        {
                            "j": job,
                            "e": eids[state],
                            "o": op,
                            "s": status or ("COMPLETED" if state == "decrypted" else "IN_PROGRESS"),
                            "p": 3 if status or state == "decrypted" else 1,
                        },
                    )
                for n, kind in enumerate(["election", "chunk", "chunk"]):
                    cid = c.execute(
                        text(
                            "INSERT INTO election_center (election_id, tally_job_id, chunk_number, kind,"
                            " ballot_count, result)"
                            " VALUES (:e, :t, :n, :k, 1, CAST(:r AS JSONB)) RETURNING id"
                        ),
                        {"e": eids[state], "t": tally, "n": n, "k": kind, "r": plain},
                    ).scalar_one()
                    c.execute(
                        text(
                            "INSERT INTO decryption_share (chunk_id, guardian_id, job_id, share)"
                            " VALUES (:c, 'g1', :j, '{}')"
                        ),
                        {"c": cid, "j": partial},
                    )
                    task_state = "DONE" if state == "decrypted" or n == 0 else "PENDING"
                    c.execute(
                        text(
                            "INSERT INTO chunk_task (job_id, chunk_id, state, attempts)"
                            " VALUES (:j, :c, :s, 0)"
                        ),
                        {"j": partial, "c": cid, "s": task_state},
                    )
                c.execute(
                    text(
                        "INSERT INTO guardian_key_escrow (id, election_id, guardian_id, sealed)"
                        " VALUES (:i, :e, 'g1', 'x')"
                    ),
                    {"i": uuid.uuid4(), "e": eids[state]},
                )
        migrate.upgrade(empty_pg)
        with engine.connect() as c:
            assert (
                c.scalar(
                    text("SELECT count(*) FROM election_center WHERE kind = 'chunk' AND result IS NOT NULL")
                )
                == 0
            )
            assert (
                c.scalar(
                    text(
                        "SELECT count(*) FROM election_center WHERE kind = 'election' AND result IS NOT NULL"
                    )
                )
                == 2
            )
            assert c.scalar(text("SELECT count(*) FROM decryption_share")) == 0
            assert c.scalar(text("SELECT count(*) FROM guardian_key_escrow")) == 0
            jobs = dict(
                c.execute(
                    text(
                        "SELECT election_id, status FROM election_job"
                        " WHERE operation_type = 'PARTIAL_DECRYPTION'"
                    )
                ).all()
            )
            assert jobs == {eids["tallied"]: "FAILED", eids["decrypted"]: "COMPLETED"}
            failed = c.execute(
                text(
                    "SELECT j.error_message, j.failed_chunks, j.processed_chunks, j.total_chunks"
                    " FROM election_job j"
                    " WHERE j.election_id = :e AND j.operation_type = 'PARTIAL_DECRYPTION'"
                ),
                {"e": eids["tallied"]},
            ).one()
            assert "migration 0002" in failed[0] and failed[1] + failed[2] == failed[3]
            assert c.scalar(
                text("SELECT result IS NOT NULL FROM election WHERE id = :e"), {"e": eids["decrypted"]}
            )
            # A chunk can no longer be given a result.
            with pytest.raises(Exception, match="chunk_never_decrypted"):
                c.execute(text("UPDATE election_center SET result = '{}' WHERE kind = 'chunk'"))
    finally:
        engine.dispose()


def test_upgrade_drops_the_copy_of_spoiled_decryptions_from_the_election_result(empty_pg: str) -> None:
    """Migration 0007: ``election.result`` keeps the tally and loses ``spoiled_ballots`` (the units hold
    them); a result without the key is left as it was."""
    migrate.upgrade(empty_pg, "0006")
    engine = create_engine(empty_pg)
    with_copy = '{"object_id": "election-results", "contests": {"c": {}}, "spoiled_ballots": {"b1": {}}}'
    without = '{"object_id": "election-results", "contests": {}}'
    try:
        with engine.begin() as c:
            ids = [
                c.execute(
                    text(
                        "INSERT INTO election (name, state, manifest, manifest_version, number_of_guardians,"
                        " quorum, result) VALUES ('e', 'decrypted', '{}', 1, 1, 1, CAST(:r AS JSONB))"
                        " RETURNING id"
                    ),
                    {"r": r},
                ).scalar_one()
                for r in (with_copy, without)
            ]
        migrate.upgrade(empty_pg)
        with engine.connect() as c:
            got = [
                c.execute(text("SELECT result FROM election WHERE id = :i"), {"i": i}).scalar_one()
                for i in ids
            ]
    finally:
        engine.dispose()
    assert got == [
        {"object_id": "election-results", "contests": {"c": {}}},
        {"object_id": "election-results", "contests": {}},
    ]


def test_upgrade_stops_on_a_repeated_tracking_code_naming_it(empty_pg: str) -> None:
    """Migration 0008: a code held by two ballots of one election stops the upgrade (nothing is deleted
    for the operator), naming the election, the code, the ballots and which code chains; the same code
    in two elections is no repeat. Once the forgery is gone, the upgrade goes through."""
    migrate.upgrade(empty_pg, "0007")
    e = ballot_helpers.make_election()
    alice, mallory = ballot_helpers.submitted_ballots(e, 2)
    mallory = dataclasses.replace(mallory, code=alice.code)  # a valid ballot carrying alice's receipt
    code = to_hex(alice.code)
    engine = create_engine(empty_pg)
    try:
        with engine.begin() as c:
            e1, e2 = _raw_elections(c, 2)
            rows = [(e1, "alice", alice), (e1, "mallory", mallory), (e2, "alice-elsewhere", alice)]
            c.execute(
                text(
                    "INSERT INTO ballot (election_id, object_id, state, code, payload)"
                    " VALUES (:e, :o, 1, :c, :p)"
                ),
                [{"e": eid, "o": oid, "c": code, "p": encode_submitted_ballot(b)} for eid, oid, b in rows],
            )
        with pytest.raises(RuntimeError) as info:
            migrate.upgrade(empty_pg)
        assert (
            f"election {e1}, tracking code {code}: ballots alice (code chains), mallory (code does not chain)"
            in str(info.value)
        )
        assert f"election {e2}" not in str(info.value)
        assert migrate.current_revision(empty_pg) == "0007"
        with engine.begin() as c:
            c.execute(text("DELETE FROM ballot WHERE object_id = 'mallory'"))
        migrate.upgrade(empty_pg)
        assert migrate.current_revision(empty_pg) == _head()
        with engine.begin() as c, pytest.raises(Exception, match="ux_ballot_election_code"):
            c.execute(
                text(
                    "INSERT INTO ballot (election_id, object_id, state, code, payload)"
                    " VALUES (:e, 'again', 1, :c, '\\x00')"
                ),
                {"e": e1, "c": code},
            )
    finally:
        engine.dispose()
