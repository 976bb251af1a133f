"""The cuttable TCP proxy the outage tests stand between them and PostgreSQL (``tests/netproxy.py``).

Its faults are the tests' faults: a proxy that left a client waiting for ever on a slow answer hung
an outage test and then the whole run at exit (a thread blocked in a read), so it is tested itself."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL
from tests.netproxy import Proxy

pytestmark = pytest.mark.services


def _connect(proxy: Proxy) -> psycopg.Connection:
    u = urlparse(PG_ADMIN_URL.replace("+psycopg", ""))
    return psycopg.connect(
        host="127.0.0.1", port=proxy.port, user=u.username or "postgres", dbname="postgres", connect_timeout=5
    )


def _target() -> tuple[str, int]:
    u = urlparse(PG_ADMIN_URL.replace("+psycopg", ""))
    return u.hostname or "127.0.0.1", u.port or 5432


def test_an_answer_slower_than_the_connect_timeout_arrives() -> None:
    with Proxy(*_target()) as proxy, _connect(proxy) as conn:
        assert conn.execute("SELECT pg_sleep(6), 7").fetchone() == ("", 7)


def test_a_cut_fails_an_open_connection_at_once_and_refuses_new_ones_until_restored() -> None:
    with Proxy(*_target()) as proxy:
        conn = _connect(proxy)
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            _connect(proxy)
        assert time.monotonic() - started < 5
        proxy.restore()
        with _connect(proxy) as again:
            assert again.execute("SELECT 1").fetchone() == (1,)
