"""Which database errors are worth retrying (``session.is_disconnect``), against the real PostgreSQL: a
terminated backend is retried on a fresh connection; a program limit (SQLSTATE class 54) is not, since
retried it fails for ever (the 100,000-ballot run's jsonb value over 256 MB was held as an outage)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db.session import in_transaction, is_disconnect

pytestmark = pytest.mark.services


def test_a_program_limit_is_not_retried(pg_url: str) -> None:
    engine = create_engine(pg_url)
    calls = []

    def too_wide(s: Session) -> object:
        calls.append(1)
        # "target lists can have at most 1664 entries": SQLSTATE 54011, an OperationalError in psycopg
        return s.execute(text("SELECT " + ", ".join(["1"] * 1700))).one()

    try:
        with pytest.raises(OperationalError) as caught:
            in_transaction(engine, too_wide, delay=0.01)
    finally:
        engine.dispose()
    assert getattr(caught.value.orig, "sqlstate", None) == "54011"
    assert not is_disconnect(caught.value)
    assert calls == [1]


def test_a_terminated_backend_is_retried_on_a_new_connection(pg_url: str) -> None:
    engine = create_engine(pg_url)
    calls = []

    def once_terminated(s: Session) -> int:
        calls.append(1)
        if len(calls) == 1:
            s.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))  # SQLSTATE 57P01
        return int(s.execute(text("SELECT 7")).scalar_one())

    try:
        assert in_transaction(engine, once_terminated, delay=0.01) == 7
    finally:
        engine.dispose()
    assert len(calls) == 2
