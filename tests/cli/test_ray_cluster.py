"""The CLI beside a Ray cluster started with ``ray start`` on the same machine.

- The embedded default starts its own local Ray: it does not attach to a running cluster (whose
  workers read another environment). That it does not wait for the cluster a stale
  ``ray_current_cluster`` names either is asserted on an embedded demo ``tests/cli/test_cli.py`` runs anyway.
- In cluster mode (``AMARVOTE_RAY_ADDRESS``) the bridge and the demo probe every node first and refuse
  a cluster whose nodes lack the server secret, naming ``AMARVOTE_SERVER_SECRET``, before any work.
- A cluster whose nodes hold the secret runs the whole demo.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.run import amarvote
from tests.raycluster import RayCluster, ray_cluster

pytestmark = pytest.mark.services
SECRET = "cluster-test-server-secret-0123456789abcdef"
SMALL = ("--ballots", "10", "--guardians", "3", "--quorum", "2", "--missing", "1", "--spoil-every", "5")


@pytest.fixture(scope="module")
def cluster_without_secret() -> Iterator[RayCluster]:
    with ray_cluster() as c:
        yield c


def _ok(r) -> str:  # type: ignore[no-untyped-def]
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "counts equal the cast plaintexts; the record verifies" in r.stdout
    return out


def test_embedded_demo_ignores_a_running_cluster(cluster_without_secret: RayCluster, tmp_path: Path) -> None:
    # RAY_ADDRESS too: a bare ray.init() would follow it (or /tmp/ray/ray_current_cluster) to that cluster,
    # whose workers cannot open this demo's escrow.
    env = {"RAY_ADDRESS": cluster_without_secret.address, **cluster_without_secret.client_env}
    _ok(amarvote("demo", *SMALL, cwd=tmp_path, env=env))


def _refused(r) -> str:  # type: ignore[no-untyped-def]
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-4000:]
    assert "AMARVOTE_SERVER_SECRET" in out and "has no server secret" in out, out[-4000:]
    assert "Traceback" not in out, "one clear message, the traceback only under --debug"
    return out


def test_bridge_refuses_a_cluster_without_the_secret(
    cluster_without_secret: RayCluster, pg_url: str, amqp_url: str, tmp_path: Path
) -> None:
    env = {
        "AMARVOTE_DATABASE_URL": pg_url,
        "AMARVOTE_AMQP_URL": amqp_url,
        "AMARVOTE_RAY_ADDRESS": cluster_without_secret.address,
        "AMARVOTE_SERVER_SECRET": SECRET,
        **cluster_without_secret.client_env,
    }
    started = time.monotonic()
    _refused(amarvote("bridge", cwd=tmp_path, env=env, timeout=300))
    assert time.monotonic() - started < 120, "refused at start, not after the chunks failed"


def test_demo_refuses_a_cluster_without_the_secret_before_any_work(
    cluster_without_secret: RayCluster, tmp_path: Path
) -> None:
    env = {
        "AMARVOTE_RAY_ADDRESS": cluster_without_secret.address,
        "AMARVOTE_SERVER_SECRET": SECRET,
        **cluster_without_secret.client_env,
    }
    out = _refused(amarvote("demo", *SMALL, cwd=tmp_path, env=env, timeout=300))
    assert "encrypt + cast" not in out and "Result" not in out


def test_demo_runs_on_a_cluster_whose_nodes_hold_the_secret(tmp_path: Path) -> None:
    with ray_cluster({"AMARVOTE_SERVER_SECRET": SECRET}, workers=1) as c:
        env = {"AMARVOTE_RAY_ADDRESS": c.address, "AMARVOTE_SERVER_SECRET": SECRET, **c.client_env}
        _ok(amarvote("demo", *SMALL, cwd=tmp_path, env=env, timeout=600))
