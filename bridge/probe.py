"""The start-up probe: before any chunk runs, every Ray node must hold this service's server secret and
run this project's version.

A chunk task opens the guardians' key escrow with the server secret of its own node's environment.
A node without it (or with another one) fails every decryption chunk with a SealError, attempt after
attempt, long after the tally ran; a node with another version of the code computes with other code.
So the bridge, the demo and ``record run`` send one small task to each alive node first and refuse to
start on a mismatch, naming the setting to fix. The probe compares fingerprints
(``service.security.secrets.secret_fingerprint``), never the secret: nothing secret travels.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import ray

from service.security.secrets import ConfigError, configured_fingerprint, secret_fingerprint, server_secret
from service.settings import Settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 120.0


class ClusterMismatch(RuntimeError):
    """The Ray cluster cannot run this service's chunks; the message names the setting to fix."""


def project_version() -> str:
    try:
        return version("amarvote")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


@dataclass(frozen=True, slots=True)
class NodeReport:
    node_id: str
    host: str
    version: str
    fingerprint: str | None
    secret_problem: str | None = None  # the node's secret is unusable (a short generated file): why


@ray.remote(num_cpus=0, max_retries=0)
def _report(node_id: str) -> NodeReport:
    from service.settings import Settings as WorkerSettings

    # The worker's own settings: its node's environment and working directory, as chunk tasks see them.
    host, running = socket.gethostname(), project_version()
    try:
        return NodeReport(node_id, host, running, configured_fingerprint(WorkerSettings()))
    except ConfigError as exc:  # names the file or setting, never the value
        return NodeReport(node_id, host, running, None, str(exc))


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def probe_cluster(settings: Settings, timeout: float = PROBE_TIMEOUT_SECONDS) -> list[NodeReport]:
    """Run the probe on every alive node; raise ClusterMismatch naming what differs."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    expected_fp = secret_fingerprint(server_secret(settings))
    expected_version = project_version()
    refs = [
        _report.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)
        ).remote(n["NodeID"])
        for n in _alive_nodes()
    ]
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    if pending:
        raise ClusterMismatch(
            f"{len(pending)} of {len(refs)} Ray node(s) did not answer the start-up probe in {timeout:.0f} s"
            " (is the cluster out of workers, or do its nodes lack this project? install amarvote there)"
        )
    try:
        reports: list[NodeReport] = ray.get(ready)
    except Exception as exc:  # a node that cannot even import this project
        cause = getattr(exc, "cause", exc)
        raise ClusterMismatch(
            f"a Ray node could not run the start-up probe ({type(cause).__name__}: {cause}); install amarvote"
            f" {expected_version} on every node"
        ) from None
    problems = []
    for r in reports:
        if r.version != expected_version:
            problems.append(
                f"node {r.host} ({r.node_id[:8]}) runs amarvote {r.version}, this process {expected_version}:"
                f" install the same version on every node"
            )
        if r.secret_problem is not None:
            problems.append(f"node {r.host} ({r.node_id[:8]}): {r.secret_problem}")
        elif r.fingerprint is None:
            problems.append(
                f"node {r.host} ({r.node_id[:8]}) has no server secret: set AMARVOTE_SERVER_SECRET in the"
                " environment of `ray start` on that node (the same value as the API's)"
            )
        elif r.fingerprint != expected_fp:
            problems.append(
                f"node {r.host} ({r.node_id[:8]}) holds another server secret: set AMARVOTE_SERVER_SECRET to"
                " the same value on every Ray node and API replica, then restart its `ray start`"
            )
    if problems:
        raise ClusterMismatch("the Ray cluster cannot run this service's chunks: " + "; ".join(problems))
    log.info(
        "start-up probe: %d Ray node(s) hold this server secret and amarvote %s",
        len(reports),
        expected_version,
    )
    return reports
