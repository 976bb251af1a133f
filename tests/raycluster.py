"""A Ray cluster started with ``ray start`` on this machine, as an operator starts one, for tests.

``ray stop`` would stop every Ray process of the machine (the test session's own local Ray too), so
a cluster is stopped by killing the processes that name its GCS port. ``ray start --head`` also
rewrites ``/tmp/ray/ray_current_cluster``; the file is put back as it was when the cluster stops.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def stale_current_cluster() -> Iterator[None]:
    """``/tmp/ray/ray_current_cluster`` naming a cluster that is gone (where a bare ``ray.init()`` waits for
    ever), put back as it was at the end."""
    saved = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.exists() else None
    CURRENT_CLUSTER.parent.mkdir(parents=True, exist_ok=True)
    CURRENT_CLUSTER.write_text(f"127.0.0.1:{free_port()}")
    try:
        yield
    finally:
        if saved is None:
            CURRENT_CLUSTER.unlink(missing_ok=True)
        else:
            CURRENT_CLUSTER.write_text(saved)


@dataclass(frozen=True)
class RayCluster:
    address: str
    port: int
    token_path: str
    metrics_ports: tuple[int, ...] = ()  # each node's Prometheus endpoint (http://127.0.0.1:<port>/metrics)
    temp_dir: str | None = None  # Ray's session files, when the cluster has its own (``own_temp_dir``)
    cwd: str = ""  # where its nodes started (and its token lies)
    token: bool = True  # token authentication (else any local client may join)

    @property
    def client_env(self) -> dict[str, str]:
        """What a client (the bridge, the demo) needs to join: the cluster's token, as an operator
        copies it to the API and bridge hosts. The mode is left unset: the client must find the token."""
        return {"RAY_AUTH_TOKEN_PATH": self.token_path}


def _node_env(env: Mapping[str, str] | None) -> dict[str, str]:
    # A node's workers see the environment of the shell that ran `ray start`, and nothing later.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AMARVOTE_", "RAY_"))}
    # No workers started ahead for each job (driver) that connects: a test's drivers are many (each
    # bridge, demo and CLI subprocess is one) and short, and each worker costs about 1.5 s of CPU to start.
    no_prestart = {"RAY_enable_worker_prestart": "0", "RAY_prestart_worker_first_driver": "0"}
    return {**base, "RAY_USAGE_STATS_ENABLED": "0", **no_prestart, **(env or {})}


def _ray_start(args: list[str], env: Mapping[str, str] | None, cwd: str) -> None:
    subprocess.run(
        [RAY, "start", *args, "--disable-usage-stats"],
        env=_node_env(env),
        cwd=cwd,  # workers start here: no data directory or .env of the project's
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _processes_of(port: int) -> list[psutil.Process]:
    marks = (f":{port}", f"gcs_server_port={port}")
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(p.info.get("cmdline") or [])
        if any(m in cmdline for m in marks):
            found.append(p)
    return found


def stop_cluster(port: int) -> None:
    procs = _processes_of(port)
    # And their children: a node's dashboard and runtime-env agents rename themselves
    # (``ray::DashboardAgent``) so no port names them, outlive their raylet and ignore SIGTERM for seconds.
    children: list[psutil.Process] = []
    for p in procs:
        try:
            children += [c for c in p.children(recursive=True) if c not in procs and c not in children]
        except psutil.Error:
            pass
    for p in procs + children:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    # A test's cluster keeps nothing worth a graceful stop: 3 s, then SIGKILL (a raylet took 10 s and more).
    _, alive = psutil.wait_procs(procs, timeout=3)
    _, alive_children = psutil.wait_procs(children, timeout=1)
    for p in alive + alive_children:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive + alive_children, timeout=10)


def start_cluster(
    env: Mapping[str, str] | None = None,
    *,
    workers: int = 0,
    cpus: int = 1,
    own_temp_dir: bool = False,
    dashboard: bool = False,
    token: bool = True,
) -> RayCluster:
    """Start what ``ray_cluster`` yields; ``stop`` ends it. ``token``: token authentication, as Ray 2.60
    sets it up, with a token of the cluster's own (not ~/.ray's); without it, any local client may join
    (the tests' shared local Ray, ``tests/conftest.py``)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    cwd = tempfile.mkdtemp(prefix="amarvote-raynode-")
    temp_dir = tempfile.mkdtemp(prefix="ray-") if own_temp_dir else None
    temp_args = [f"--temp-dir={temp_dir}"] if temp_dir else []
    token_path = str(Path(cwd) / "auth_token")
    if token:
        Path(token_path).write_text(secrets.token_hex(32))
    metrics_ports = [free_port() for _ in range(workers + 1)]
    dashboard_port = free_port()  # Ray's default, 8265, may be another session's (and it does not retry)
    cluster = RayCluster(address, port, token_path, tuple(metrics_ports), temp_dir, cwd, token)
    env = {**(env or {}), **_auth_env(cluster)}
    try:
        _ray_start(
            [
                "--head",
                f"--port={port}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}",
                f"--metrics-export-port={metrics_ports[0]}",
                f"--dashboard-port={dashboard_port}" if dashboard else "--include-dashboard=false",
                *temp_args,
            ],
            env,
            cwd,
        )
        for i in range(workers):
            _join(cluster, env, cpus, metrics_ports[i + 1])
    except BaseException:
        stop(cluster)
        raise
    time.sleep(1.0)
    return cluster


def _join(cluster: RayCluster, env: Mapping[str, str], cpus: int, metrics_port: int) -> None:
    temp_args = [f"--temp-dir={cluster.temp_dir}"] if cluster.temp_dir else []
    _ray_start(
        [
            f"--address={cluster.address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            f"--metrics-export-port={metrics_port}",
            *temp_args,
        ],
        env,
        cluster.cwd,
    )


def _auth_env(cluster: RayCluster) -> dict[str, str]:
    if cluster.token:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": cluster.token_path}
    return {"RAY_AUTH_MODE": "disabled"}


def add_node(cluster: RayCluster, env: Mapping[str, str] | None = None, *, cpus: int = 1) -> None:
    """One more worker node, with ``env`` (and the cluster's token), until the cluster stops."""
    _join(cluster, {**(env or {}), **_auth_env(cluster)}, cpus, free_port())
    time.sleep(1.0)


def stop(cluster: RayCluster) -> None:
    """Stop every node of the cluster and remove its files."""
    stop_cluster(cluster.port)
    shutil.rmtree(cluster.cwd, ignore_errors=True)
    if cluster.temp_dir:
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@contextmanager
def ray_cluster(
    env: Mapping[str, str] | None = None,
    *,
    workers: int = 0,
    cpus: int = 1,
    own_temp_dir: bool = False,
    dashboard: bool = False,
) -> Iterator[RayCluster]:
    """A head node (plus ``workers`` worker nodes) on 127.0.0.1, each with ``cpus`` CPUs and ``env``.

    ``dashboard``: the head's dashboard too (about 3 s of CPU a start; the Prometheus test and the
    benchmarks want it, the rest do not).

    ``own_temp_dir``: Ray's session files (logs, sockets) in a directory of the cluster's own instead of
    the machine's ``/tmp/ray``; short, because a socket path may not exceed 107 bytes."""
    saved = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.exists() else None
    try:
        cluster = start_cluster(
            env, workers=workers, cpus=cpus, own_temp_dir=own_temp_dir, dashboard=dashboard
        )
        try:
            yield cluster
        finally:
            stop(cluster)
    finally:
        if saved is None:
            CURRENT_CLUSTER.unlink(missing_ok=True)
        else:
            CURRENT_CLUSTER.write_text(saved)
