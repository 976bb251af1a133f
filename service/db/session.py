"""Engines, the one session factory and the one transaction helper, for PostgreSQL (psycopg 3) and SQLite.

- ``session_factory(url)`` is the process's factory for a database URL (one engine and pool per URL per
  process: an API replica, a bridge, a Ray worker running many chunk tasks); ``session_factory(engine)``
  wraps an engine a caller made itself (tests, migrations).
- ``transaction(factory)`` is the unit of work: commit on success, roll back on any exception, so a
  request that fails with a 4xx leaves nothing behind. ``in_transaction(factory, fn)`` is the same for a
  function, run again on a fresh connection when the connection drops (a database restart,
  ``pg_terminate_backend``): every function run this way must be safe to repeat, as the chunk-task
  transitions are.

There is no global engine: whoever opens a transaction names the database (settings are passed
explicitly, from the composition root down).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")
SessionFactory = sessionmaker[Session]


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default driver would be psycopg2)."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the bridge's writers and the API's readers work at once; SQLite leaves foreign keys
    # off unless asked on every connection; busy_timeout waits for a writer instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin_immediate(engine: Engine) -> None:
    """Take SQLite's write lock when a transaction begins, not at its first write.

    SQLite ignores ``FOR UPDATE`` and pysqlite begins only at the first write, so a check-then-write
    (is the election open? is there a tally job already?) could interleave with another request's.
    ``BEGIN IMMEDIATE`` serialises writers as the row locks do on PostgreSQL; WAL readers still run.
    """

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# libpq connection parameters that carry a secret themselves, whatever their case (libpq knows only the
# lower-case spelling, but a refused keyword must not travel either). Parameters that name a file holding
# one (passfile, sslkey) are paths on the sender's host, not secrets, and stay.
CREDENTIAL_QUERY_PARAMETERS = frozenset({"password", "sslpassword"})


def without_password(url: str) -> str:
    """``url`` with no password at all: what may travel in a Ray task argument.

    Built anew from the parts that are not secret: ``URL.set(password=None)`` would leave the password
    in place (None means "unchanged" there), and a password may also come as a query parameter."""
    u = make_url(normalize_url(url))
    query = {k: v for k, v in u.query.items() if k.lower() not in CREDENTIAL_QUERY_PARAMETERS}
    return URL.create(
        u.drivername, username=u.username, host=u.host, port=u.port, database=u.database, query=query
    ).render_as_string(hide_password=False)


def with_own_password(url: str, own: str | None) -> str:
    """The URL to connect with on a worker: ``own`` (the worker's own setting, with its password) when it
    names the same database as ``url``, else ``url`` itself."""
    if own and without_password(own) == without_password(url):
        return normalize_url(own)
    return normalize_url(url)


def _private_sqlite_file(path: Path) -> None:
    """Create the SQLite file 0600 (its directory 0700 when made here) before SQLite does: it would create
    it under the umask, usually readable by every local user, and it holds the election and its escrow.
    SQLite gives its WAL and shared-memory files the database file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # an existing database keeps the mode its operator gave it


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """A new engine for ``url``; on SQLite every transaction takes the write lock at BEGIN."""
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:" and not u.query.get("uri"):
            _private_sqlite_file(Path(u.database))
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        _sqlite_begin_immediate(engine)
        return engine
    # A connect to a host that went silent (a partition, a cut proxy) would otherwise wait for ever,
    # and with it a chunk's thread; keepalives notice a peer that vanished under an open connection.
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    )


@lru_cache(maxsize=8)
def _factory_for_url(url: str) -> SessionFactory:
    # expire_on_commit=False: objects returned from a finished transaction stay readable.
    return sessionmaker(make_engine(url), expire_on_commit=False)


def session_factory(target: str | Engine) -> SessionFactory:
    """The process's session factory for a URL (made once; the URL is never logged), or one for an engine."""
    if isinstance(target, Engine):
        return sessionmaker(target, expire_on_commit=False)
    return _factory_for_url(normalize_url(target))


def _factory(target: SessionFactory | Engine) -> SessionFactory:
    return session_factory(target) if isinstance(target, Engine) else target


@contextmanager
def transaction(target: SessionFactory | Engine) -> Iterator[Session]:
    """A session inside one transaction: commit on success, roll back on any exception."""
    with _factory(target).begin() as session:
        yield session


# SQLSTATE classes of an OperationalError that pass: the connection (08), too many connections or out of
# memory or disk (53), a server shutting down or restarting (57), a deadlock or serialization failure (40).
# Not a program limit (54, e.g. a jsonb value over 256 MB) or a system error (58): retried, they fail again
# for ever, and a chunk held as if the database were down would never fail or free its worker.
_PASSING_SQLSTATE = ("08", "53", "57", "40")


def is_disconnect(exc: BaseException) -> bool:
    """A lost or refused connection, or another passing server state (worth retrying), as opposed to an
    error in our own SQL or data."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    state = getattr(exc.orig, "sqlstate", None)  # psycopg's; None: raised by the client (or SQLite)
    return state is None or str(state).startswith(_PASSING_SQLSTATE)


def in_transaction(
    target: SessionFactory | Engine,
    fn: Callable[[Session], T],
    *,
    attempts: int = 5,
    delay: float = 0.5,
) -> T:
    """``fn(session)`` in one transaction, run again on a fresh connection if the connection drops."""
    for attempt in range(1, attempts + 1):
        try:
            with transaction(target) as session:
                return fn(session)
        except DBAPIError as exc:
            if attempt == attempts or not is_disconnect(exc):
                raise
            log.warning("database connection lost (%s), retrying", type(exc.orig).__name__)
            time.sleep(delay * attempt)
    raise AssertionError("unreachable")


def rowcount(result: Any) -> int:
    """The rows an UPDATE or DELETE changed (``Session.execute`` is typed as returning any Result)."""
    return int(getattr(result, "rowcount", 0) or 0)


def engine_of(target: SessionFactory | Engine | Session) -> Engine:
    if isinstance(target, Engine):
        return target
    bind = target.get_bind() if isinstance(target, Session) else target.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def is_postgres(target: SessionFactory | Engine | Session) -> bool:
    return engine_of(target).dialect.name == "postgresql"
