"""Fixtures for the service tests: the session's PostgreSQL database, migrated once, and row helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.db import migrate
from service.db.session import make_engine, session_factory


@pytest.fixture(scope="session")
def db_url(pg_url: str) -> str:
    migrate.upgrade(pg_url)
    return pg_url


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def session(engine: Engine) -> Iterator[Session]:
    with session_factory(engine)() as s:
        yield s
