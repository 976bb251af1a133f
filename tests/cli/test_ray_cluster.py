"""The CLI beside a Ray cluster started with ``ray start`` on the same machine.

- The embedded default starts its own local Ray: it does not attach to a running cluster (whose
  workers read another environment), asserted on the custodial demo (claims, the verify job). That it does
  not wait for the cluster a stale ``ray_current_cluster`` names either is asserted on the guardian-held
  demo ``tests/cli/test_cli.py`` runs anyway.
- A cluster whose nodes hold the secret runs the whole demo.
- In cluster mode (``AMARVOTE_RAY_ADDRESS``) the bridge and the demo probe every node first and refuse
  a cluster one of whose nodes lacks the server secret, naming ``AMARVOTE_SERVER_SECRET``, before any
  work: the same cluster once a node without it has joined (so those tests run last).

One cluster for the module: a cluster's start costs more CPU than most tests here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.run import DEMO_12, amarvote
from tests.raycluster import RayCluster, add_node, ray_cluster

pytestmark = pytest.mark.services
SECRET = "cluster-test-server-secret-0123456789abcdef"
SMALL = ("--ballots", "10", "--guardians", "3", "--quorum", "2", "--missing", "1", "--spoil-every", "5")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """A head and a worker node, both started with the secret."""
    with ray_cluster({"AMARVOTE_SERVER_SECRET": SECRET}, workers=1) as c:
        yield c


@pytest.fixture(scope="module")
def mixed_cluster(cluster: RayCluster) -> RayCluster:
    """The same cluster, joined by a node started without the secret (for the rest of the module)."""
    add_node(cluster)
    return cluster


def _ok(r) -> str:  # type: ignore[no-untyped-def]
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "counts equal the cast plaintexts; the record verifies" in r.stdout
    return out


def test_custodial_demo_on_the_embedded_default_ignores_a_running_cluster(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """The custodial demo, a whole election on the embedded default, beside a running cluster that
    ``RAY_ADDRESS`` names (a bare ray.init() would follow it, or ``/tmp/ray/ray_current_cluster``, to that
    cluster, whose workers hold another secret and cannot open this demo's escrow): it starts a local
    Ray of its own. The stale file's case rides on the guardian-held demo (``tests/cli/test_cli.py``)."""
    out = tmp_path / "record"
    r = amarvote(
        "demo",
        "--custodial",
        *DEMO_12,
        "--out",
        str(out),
        cwd=tmp_path,
        env={"RAY_ADDRESS": cluster.address, **cluster.client_env},
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "counts equal the cast plaintexts; the record verifies, and so does the verify job" in r.stdout
    assert (tmp_path / "amarvote-data").is_dir(), (
        "the embedded default keeps its SQLite in the working directory"
    )
    # The last lines say where the guardians' secrets are: the two absent guardians' records still held
    # by the service, the three others claimed into files only their owner can read.
    last = " ".join(r.stdout.strip().splitlines()[-6:])
    assert "sealed under the server secret until claimed; claimed files are in" in last, last
    assert "guardian-4, guardian-5" in last and "guardian-1, guardian-2, guardian-3" in last, last
    claimed = re.search(r"claimed files are in\s+(\S+)", r.stdout)
    assert claimed, r.stdout[-2000:]
    files = sorted(Path(claimed[1]).glob("*.credential.json"))
    assert [f.name for f in files] == [f"guardian-{i}.credential.json" for i in (1, 2, 3)]
    assert all(f.stat().st_mode & 0o077 == 0 for f in files)
    assert len(list((out / "election_record" / "spoiled_ballots").glob("*.json"))) == 3
    assert len(list((out / "election_record" / "submitted_ballots").glob("*.json"))) == 12

    v = amarvote("record", "verify", "--local", str(out), cwd=tmp_path)  # the demo ran it on Ray
    assert v.returncode == 0, v.stdout + v.stderr
    assert "OK" in v.stdout

    # The same election verified from the database, as a job for the bridge (one at a time).
    resume = re.search(r"election (\d+); if interrupted, continue with: AMARVOTE_DATA_DIR=(\S+)", r.stdout)
    assert resume, r.stdout[-2000:]
    eid, env = resume[1], {"AMARVOTE_DATA_DIR": resume[2]}
    job = amarvote("jobs", "verify", eid, cwd=tmp_path, env=env)
    assert job.returncode == 0 and "verify job" in job.stdout, job.stdout + job.stderr
    again = amarvote("jobs", "verify", eid, cwd=tmp_path, env=env)
    assert again.returncode == 1 and "already has a verify job" in again.stdout, again.stdout
    missing = amarvote("jobs", "verify", "99", cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "99" in missing.stdout, missing.stdout


def test_demo_runs_on_a_cluster_whose_nodes_hold_the_secret(cluster: RayCluster, tmp_path: Path) -> None:
    env = {"AMARVOTE_RAY_ADDRESS": cluster.address, "AMARVOTE_SERVER_SECRET": SECRET, **cluster.client_env}
    _ok(amarvote("demo", *SMALL, cwd=tmp_path, env=env, timeout=600))


def _refused(r) -> str:  # type: ignore[no-untyped-def]
    out = r.stdout + r.stderr
    assert r.returncode == 1, out[-4000:]
    assert "AMARVOTE_SERVER_SECRET" in out and "has no server secret" in out, out[-4000:]
    assert "Traceback" not in out, "one clear message, the traceback only under --debug"
    return out


def test_bridge_refuses_a_cluster_without_the_secret(
    mixed_cluster: RayCluster, pg_url: str, amqp_url: str, tmp_path: Path
) -> None:
    env = {
        "AMARVOTE_DATABASE_URL": pg_url,
        "AMARVOTE_AMQP_URL": amqp_url,
        "AMARVOTE_RAY_ADDRESS": mixed_cluster.address,
        "AMARVOTE_SERVER_SECRET": SECRET,
        **mixed_cluster.client_env,
    }
    started = time.monotonic()
    _refused(amarvote("bridge", cwd=tmp_path, env=env, timeout=300))
    assert time.monotonic() - started < 120, "refused at start, not after the chunks failed"


def test_demo_refuses_a_cluster_without_the_secret_before_any_work(
    mixed_cluster: RayCluster, tmp_path: Path
) -> None:
    env = {
        "AMARVOTE_RAY_ADDRESS": mixed_cluster.address,
        "AMARVOTE_SERVER_SECRET": SECRET,
        **mixed_cluster.client_env,
    }
    out = _refused(amarvote("demo", *SMALL, cwd=tmp_path, env=env, timeout=300))
    assert "encrypt + cast" not in out and "Result" not in out
