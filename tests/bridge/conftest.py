"""Fixtures for the bridge tests: the session's PostgreSQL (migrated), its RabbitMQ vhost, one local Ray.

Ray takes about 5 s to start, so one local instance (``local_ray``) serves the whole session. Each
test starts from empty job tables (``clean``) and empty queues, so counts are the test's own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from sqlalchemy import text

from bridge.brokers import rabbitmq as topology
from service.db import migrate
from service.db.session import SessionFactory, session_factory
from service.settings import Settings
from tests.bridge.helpers_bridge import bridge_settings
from tests.conftest import TEST_SERVER_SECRET


@pytest.fixture(scope="session")
def bridge_db(pg_url: str) -> str:
    migrate.upgrade(pg_url)
    return pg_url


@pytest.fixture(scope="session")
def factory(bridge_db: str) -> SessionFactory:
    return session_factory(bridge_db)


@pytest.fixture(scope="session")
def ray_local(local_ray: None) -> None:
    """The session's one local Ray (``tests/conftest.py``: ``local_ray``), shared with other suites."""


@pytest.fixture(scope="session")
def server_secret(local_ray: None) -> bytes:
    """The server secret the Ray workers were started with (``local_ray`` sets it)."""
    return TEST_SERVER_SECRET.encode()


@pytest.fixture()
def settings(bridge_db: str, amqp_url: str, server_secret: bytes) -> Settings:
    return bridge_settings(bridge_db, amqp_url, server_secret)


def _purge(url: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        topology.declare(ch)
        for q in topology.WORK_QUEUES:
            ch.queue_purge(q.name)
            ch.queue_purge(q.dead_letter_queue)
    finally:
        conn.close()


def _truncate(factory: SessionFactory) -> None:
    with factory.begin() as s:
        s.execute(text("TRUNCATE election, outbox RESTART IDENTITY CASCADE"))


@pytest.fixture()
def clean(factory: SessionFactory, amqp_url: str) -> Iterator[None]:
    """Empty job tables and queues before the test, and no leftovers after it: the session database
    is shared with other suites, whose runners would otherwise pick up this test's pending tasks."""
    _truncate(factory)
    _purge(amqp_url)
    yield
    _truncate(factory)
