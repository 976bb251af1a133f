"""Database access for bridge processes and Ray workers: one engine per URL per process.

A Ray worker process runs many chunk tasks; it keeps one small pool instead of connecting per task.
``pool_pre_ping`` and :func:`in_transaction` let a bridge ride out a dropped connection (a database
restart, ``pg_terminate_backend``): the short transaction is simply run again on a fresh connection.
Every transaction we retry is safe to repeat because the transitions are idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

SessionFactory = sessionmaker[Session]


@lru_cache(maxsize=8)
def session_factory(url: str) -> SessionFactory:
    """A session factory for ``url``, made once per process (the URL is never logged)."""
    from service.db.session import make_engine

    # On SQLite make_engine begins every transaction IMMEDIATE: the transitions' read-then-write
    # (a job's counters) is then atomic, as the row locks make it on PostgreSQL.
    return sessionmaker(make_engine(url), expire_on_commit=False)


def is_disconnect(exc: BaseException) -> bool:
    """A lost or refused connection (worth retrying), as opposed to an error in our own SQL."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)


def in_transaction(
    factory: SessionFactory,
    fn: Callable[[Session], T],
    *,
    attempts: int = 5,
    delay: float = 0.5,
) -> T:
    """Run ``fn(session)`` in one transaction, again on a fresh connection if the connection drops."""
    for attempt in range(1, attempts + 1):
        try:
            with factory.begin() as session:
                return fn(session)
        except DBAPIError as exc:
            if attempt == attempts or not is_disconnect(exc):
                raise
            log.warning("database connection lost (%s), retrying", type(exc.orig).__name__)
            time.sleep(delay * attempt)
    raise AssertionError("unreachable")
