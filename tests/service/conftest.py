"""Fixtures for the service tests: the session's PostgreSQL database, migrated once; and, for a module
that defines a ``settings`` fixture, an API client and an admin's headers over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from helpers_service import admin_headers
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from service.api.app import create_app
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


@pytest.fixture(scope="module")
def client(settings) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def admin(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return admin_headers(settings)
