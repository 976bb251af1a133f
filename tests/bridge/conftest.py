"""Fixtures for the bridge tests: the session's PostgreSQL (migrated), its RabbitMQ vhost, one local Ray.

Ray takes about 5 s to start, so one local instance serves the whole session. Each test starts from
empty job tables (``clean``) and empty queues, so counts are the test's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pika
import pytest
from sqlalchemy import text

from bridge import topology
from bridge.db import SessionFactory, session_factory
from service.db import migrate
from service.settings import Settings


@pytest.fixture(scope="session")
def bridge_db(pg_url: str) -> str:
    migrate.upgrade(pg_url)
    return pg_url


@pytest.fixture(scope="session")
def factory(bridge_db: str) -> SessionFactory:
    return session_factory(bridge_db)


TEST_SERVER_SECRET = "bridge-test-server-secret-0123456789"


@pytest.fixture(scope="session")
def server_secret() -> bytes:
    return os.environ.setdefault("AMARVOTE_SERVER_SECRET", TEST_SERVER_SECRET).encode()


@pytest.fixture(scope="session")
def ray_local(server_secret: bytes) -> Iterator[None]:
    """One local Ray for the session. Its workers inherit this environment, so they unseal key escrow
    with the same server secret as the test (production sets AMARVOTE_SERVER_SECRET on every node)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield


@pytest.fixture()
def settings(bridge_db: str, amqp_url: str, server_secret: bytes) -> Settings:
    return Settings(
        database_url=bridge_db,
        amqp_url=amqp_url,
        max_attempts=3,
        retry_backoff_seconds=0.2,
        lease_seconds=5,
        task_memory_mb=64,
        max_in_flight=4,
        server_secret=server_secret.decode(),
    )


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


@pytest.fixture()
def clean(factory: SessionFactory, amqp_url: str) -> None:
    with factory.begin() as s:
        s.execute(text("TRUNCATE election, outbox RESTART IDENTITY CASCADE"))
    _purge(amqp_url)
