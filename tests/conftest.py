"""Shared fixtures: a fresh PostgreSQL database and a fresh RabbitMQ vhost per test session.

Tests of the database and the broker run against the machine's real servers (``scripts/test.sh``
starts them when absent). ``AMARVOTE_TEST_PG`` and ``AMARVOTE_TEST_AMQP`` point elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytest_plugins = ["tests.exit_watchdog"]

PG_ADMIN_URL = os.environ.get("AMARVOTE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("AMARVOTE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")


@contextmanager
def new_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped at the end); yields its URL."""
    from sqlalchemy import create_engine, text

    name = f"amarvote_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def new_vhost() -> Iterator[str]:
    """A new RabbitMQ vhost, so the fixed queue names never collide (deleted at the end); yields its URL."""
    vhost = f"amarvote_test_{uuid.uuid4().hex[:10]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"{AMQP_BASE}/{vhost}"
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reaches the real PostgreSQL or RabbitMQ through the session's fixtures carries the
    ``services`` marker (``-m "not services"`` runs the rest); tests that make their own database or vhost
    are marked by hand."""
    for item in items:
        if {"pg_url", "amqp_url"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    # Shown even under -q: which Python 3.10 the interop tests ran the reference with.
    from tests.oracle import describe

    terminalreporter.write_line(describe())


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session."""
    with new_database() as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A fresh RabbitMQ vhost for this session."""
    with new_vhost() as url:
        yield url


TEST_SERVER_SECRET = "amarvote-test-server-secret-0123456789"
# API apps only: the token key is its own secret, never the server secret the Ray workers hold.
TEST_JWT_SECRET = "amarvote-test-jwt-secret-0123456789abc"


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the whole session, whose workers share the tests' server secret.

    Workers read the server secret from their own environment (production sets it on every node),
    so it is set before Ray starts and every test that runs chunk tasks uses this fixture.
    """
    import ray

    if not ray.is_initialized():
        # Set while Ray starts, so its raylet (and every worker it forks, for any job) inherits it,
        # then taken back: the tests' own settings choose their secret explicitly.
        saved = os.environ.get("AMARVOTE_SERVER_SECRET")
        os.environ["AMARVOTE_SERVER_SECRET"] = TEST_SERVER_SECRET
        try:
            ray.init(
                address="local",  # never a cluster some test (or the machine) started with `ray start`
                num_cpus=4,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"AMARVOTE_SERVER_SECRET": TEST_SERVER_SECRET}},
            )
        finally:
            if saved is None:
                os.environ.pop("AMARVOTE_SERVER_SECRET", None)
            else:
                os.environ["AMARVOTE_SERVER_SECRET"] = saved
    yield
