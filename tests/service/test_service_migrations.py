"""Migrations: an empty PostgreSQL database upgrades to head, and head matches the models exactly."""

from __future__ import annotations

import os
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from service.db import migrate
from service.db.models import Base

PG_ADMIN_URL = os.environ.get("AMARVOTE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


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


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


def _diff(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            mc = MigrationContext.configure(c, opts={"compare_type": True})
            return compare_metadata(mc, Base.metadata)
    finally:
        engine.dispose()


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
