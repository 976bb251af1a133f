"""Shared fixtures: a fresh PostgreSQL database and a fresh RabbitMQ vhost per test session (each
pytest-xdist worker is a session of its own), and one Ray: a local one per session, or under
pytest-xdist one for the whole run, shared by the workers (``_shared_ray``).

Tests of the database and the broker run against the machine's real servers (``scripts/test.sh``
starts them when absent). ``AMARVOTE_TEST_PG`` and ``AMARVOTE_TEST_AMQP`` point elsewhere.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


# The fixtures that reach something beyond this process, and the markers a test that uses one (itself or
# through another fixture) gets: ``-m "not services"`` is then the fast layer, pure code in this process.
SERVICE_FIXTURES: dict[str, tuple[str, ...]] = {
    "pg_url": ("services",),
    "amqp_url": ("services",),
    "local_ray": ("services", "ray"),
    "reference_election": ("services", "interop"),
}


def _module_markers(module: object) -> tuple[str, ...]:
    """What a whole test module needs, from what it imports: a Ray cluster of its own (``ray start``), or
    the ``amarvote`` command in a subprocess (each run imports the project and a demo starts a local Ray)."""
    from tests.cli.run import amarvote
    from tests.raycluster import ray_cluster

    names = vars(module).values()
    if any(v is ray_cluster for v in names):
        return ("services", "ray")
    if any(v is amarvote for v in names):
        return ("services",)
    return ()


# Under pytest-xdist, where the workers find the Ray they share (``local_ray``): a folder of this run's.
SHARED_RAY_DIR = "AMARVOTE_TEST_SHARED_RAY_DIR"
_shared_ray_key = pytest.StashKey[str]()  # the controller's copy of that folder, to stop the Ray at the end


def pytest_configure(config: pytest.Config) -> None:
    from tests.oracle import _fresh_dir, under_ci

    if hasattr(config, "workerinput"):
        return
    if under_ci():
        _fresh_dir()  # before xdist starts its workers, so they share this run's oracle venv
    if config.getoption("numprocesses", None):
        # Before the workers start: they inherit the environment. The first to need Ray starts it.
        config.stash[_shared_ray_key] = run_dir = tempfile.mkdtemp(prefix="amarvote-tests-")
        os.environ[SHARED_RAY_DIR] = run_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    run_dir = config.stash.get(_shared_ray_key, None)
    if run_dir is None:
        return
    from tests.raycluster import RayCluster, stop

    state = Path(run_dir) / "ray.json"
    if state.exists():
        stop(RayCluster(**json.loads(state.read_text())))
    shutil.rmtree(run_dir, ignore_errors=True)
    os.environ.pop(SHARED_RAY_DIR, None)


def _shared_ray(run_dir: Path) -> str:
    """The address of the Ray this run's xdist workers share, started by the first that asks (under a
    lock): a head with ``ray start`` whose workers hold the tests' server secret, as many CPUs as the
    workers' own local Rays had together, stopped when the run ends (``pytest_unconfigure``). One Ray
    instead of one per worker: its processes (GCS, raylet, agents, monitors) cost CPU even when idle."""
    from tests.raycluster import start_cluster

    state = run_dir / "ray.json"
    with open(run_dir / "ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not state.exists():
            workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
            # Up to 10 idle workers per xdist worker, where Ray keeps one per CPU: each xdist worker's job
            # lives the whole run beside many short bridge jobs, and past the limit Ray killed its idle
            # workers after a second, only to start them again (about 1.5 s of CPU each) for its next
            # test. Measured: 603 CPU-s for the slow layer against 647 (docs/field-notes.md).
            soft_limit = {"RAY_num_workers_soft_limit": str(10 * workers)}
            cluster = start_cluster(
                {"AMARVOTE_SERVER_SECRET": TEST_SERVER_SECRET, **soft_limit},
                cpus=LOCAL_RAY_CPUS * workers,
                own_temp_dir=True,
                token=False,
            )
            state.write_text(json.dumps(dataclasses.asdict(cluster)))
        return str(json.loads(state.read_text())["address"])


# The longest modules, longest first (measured on a loaded 2-core machine): under pytest-xdist they start
# first, so none starts last and leaves the other workers idle. Only the order: a stale list costs time.
LONGEST_FIRST = (
    "tests/cli/test_cli.py",
    "tests/cli/test_ray_cluster.py",
    "tests/bridge/test_bridge_flow.py",
    "tests/bridge/test_fairness.py",
    "tests/test_chaos_quick.py",
    "tests/bridge/test_web_pages.py",
    "tests/cli/test_guardian.py",
    "tests/bridge/test_share_uploads.py",
    "tests/service/test_service_schemathesis.py",
    "tests/bridge/test_reliability.py",
    "tests/interop/test_decryption_interop.py",
    "tests/bridge/test_dashboard_prometheus.py",
    "tests/interop/test_record_verify_cli.py",
    "tests/interop/test_record_run.py",
    "tests/bridge/test_verify_job.py",
    "tests/service/test_service_whole_election.py",
    "tests/bridge/test_verify_ray.py",
    "tests/service/test_service_kdf.py",
    "tests/compute/test_native_memcheck.py",
    "tests/compute/test_record_memory.py",
    "tests/compute/test_record_untrusted_names.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by what it reaches (``SERVICE_FIXTURES``, ``_module_markers``; an ``interop``
    test runs the reference, so it is a ``services`` one too); on an xdist worker, order the modules."""
    for item in items:
        names: set[str] = set()
        for fixture in set(getattr(item, "fixturenames", ())) & SERVICE_FIXTURES.keys():
            names.update(SERVICE_FIXTURES[fixture])
        module = getattr(item, "module", None)
        if module is not None:
            names.update(_module_markers(module))
        if item.get_closest_marker("interop"):
            names.add("services")
        for name in sorted(names - {m.name for m in item.iter_markers()}):
            item.add_marker(name)
    if hasattr(config, "workerinput"):
        # Stable, and by module: a module's tests keep their order and stay together (``--dist loadfile``).
        rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


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


LOCAL_RAY_CPUS = 4


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the whole session, whose workers share the tests' server secret; under
    pytest-xdist, one for the whole run (``_shared_ray``).

    Workers read the server secret from their own environment (production sets it on every node),
    so it is set before Ray starts and every test that runs chunk tasks uses this fixture.
    """
    import ray

    shared = os.environ.get(SHARED_RAY_DIR)
    if not ray.is_initialized() and shared:
        ray.init(address=_shared_ray(Path(shared)), log_to_driver=False)
    elif not ray.is_initialized():
        # Set while Ray starts, so its raylet (and every worker it forks, for any job) inherits it,
        # then taken back: the tests' own settings choose their secret explicitly. No runtime_env
        # besides: it would start each worker through Ray's runtime-env set-up (one more interpreter)
        # and leave the workers Ray pre-starts unused (about a tenth of a Ray test's CPU).
        saved = os.environ.get("AMARVOTE_SERVER_SECRET")
        os.environ["AMARVOTE_SERVER_SECRET"] = TEST_SERVER_SECRET
        try:
            ray.init(
                address="local",  # never a cluster some test (or the machine) started with `ray start`
                num_cpus=LOCAL_RAY_CPUS,
                include_dashboard=False,
                log_to_driver=False,
            )
        finally:
            if saved is None:
                os.environ.pop("AMARVOTE_SERVER_SECRET", None)
            else:
                os.environ["AMARVOTE_SERVER_SECRET"] = saved
    yield
