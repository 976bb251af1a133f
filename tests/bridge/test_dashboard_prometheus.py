"""Every query of the Grafana dashboard, run by a real Prometheus over what amarvote really exports.

Prometheus (Debian's, ``scripts/services.sh`` installs it) runs with ``deploy/prometheus.yml``, its targets
pointed here: the API served by uvicorn, a Ray cluster's nodes through the service discovery file Ray's
dashboard writes, and RabbitMQ's ``rabbitmq_prometheus`` plugin (``scripts/services.sh`` enables it, on
127.0.0.1:15692). A small tally, one of whose chunks always fails, runs through the relay, RabbitMQ and the
bridge's executor (a process of its own, a driver of that cluster). Then each panel's ``expr`` in
``deploy/grafana/amarvote-dashboard.json`` must return series carrying the labels the panel shows (its
legend's ``{{label}}`` and its ``by (...)``), and a panel over the queues must show every queue of the
topology: a metric or label the dashboard names and nothing exports fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from bridge.brokers import rabbitmq as topology
from bridge.brokers.rabbitmq import RabbitMQPublisher
from bridge.relay import Relay
from service.api.app import create_app
from service.db.session import SessionFactory
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.bridge.helpers_bridge import InThread, job_ended, job_row, make_tally_job, wait_for
from tests.conftest import TEST_JWT_SECRET, TEST_SERVER_SECRET
from tests.raycluster import ray_cluster

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "amarvote-dashboard.json"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus.yml"
RABBITMQ_METRICS = "127.0.0.1:15692"
# Grafana's variables, as it would fill them for a 1-hour view.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "job": ".+"}


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, expr with Grafana's variables filled, legendFormat) of every panel, rows' included."""
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA_VARIABLES.get(m[1], m[0]), target["expr"])
                assert "$" not in expr, f"{panel['title']}: unknown Grafana variable in {expr}"
                out.append((panel["title"], expr, target.get("legendFormat", "")))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def shown_labels(expr: str, legend: str) -> set[str]:
    """The labels a panel shows: its legend's ``{{label}}`` and the ``by (...)`` it groups by (``le``, which
    ``histogram_quantile`` consumes, aside)."""
    labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        labels |= {name.strip() for name in group.split(",") if name.strip()}
    return labels - {"le"}


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    """The series of an instant query (Prometheus's HTTP API)."""
    try:
        body = json.loads(_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    except urllib.error.HTTPError as exc:  # 400 for a query that does not parse
        raise AssertionError(f"{expr}: {exc.read().decode()}") from exc
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def problems_of(prom: str, expr: str, legend: str) -> list[str]:
    series = query(prom, expr)
    if not series:
        return ["no data"]
    found = []
    for label in sorted(shown_labels(expr, legend)):
        if any(label not in s["metric"] for s in series):
            found.append(f"label {label!r} missing (series: {[s['metric'] for s in series][:3]})")
    if "queue" in shown_labels(expr, legend):  # a queue panel shows every queue of the topology
        dlq = ".dlq" in expr
        want = {q.dead_letter_queue if dlq else q.name for q in topology.WORK_QUEUES}
        missing = want - {s["metric"].get("queue") for s in series}
        if missing:
            found.append(f"queues missing: {sorted(missing)}")
    return found


@contextmanager
def api_server(settings: Settings) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, interval=0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def prometheus_config(api: str, service_discovery: Path) -> dict[str, Any]:
    """``deploy/prometheus.yml`` with this machine's targets and a 1 s scrape."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"amarvote-api", "ray", "rabbitmq"}, jobs
    jobs["amarvote-api"]["static_configs"] = [{"targets": [api.removeprefix("http://")]}]
    jobs["ray"]["file_sd_configs"] = [{"files": [str(service_discovery)], "refresh_interval": "1s"}]
    # Ray writes the node's routable address even for --node-ip-address=127.0.0.1 (it resolves loopback
    # away) and its metrics agents listen on every interface: scrape the same ports on loopback.
    jobs["ray"]["relabel_configs"] = [
        {
            "source_labels": ["__address__"],
            "regex": r"[^:]+:(\d+)",
            "target_label": "__address__",
            "replacement": "127.0.0.1:$1",
        }
    ]
    jobs["rabbitmq"]["static_configs"] = [{"targets": [RABBITMQ_METRICS]}]
    return config


@contextmanager
def prometheus(binary: str, tmp_path: Path, config: dict[str, Any]) -> Iterator[str]:
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        try:
            return _get(f"{url}/-/ready", timeout=1).startswith(b"Prometheus")
        except (urllib.error.URLError, OSError):
            return False

    try:
        wait_for(ready, timeout=30, interval=0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _value(prom: str, expr: str) -> float:
    series = query(prom, expr)
    return float(series[0]["value"][1]) if series else 0.0


def test_every_dashboard_query_returns_what_its_panel_shows(  # type: ignore[no-untyped-def]
    tmp_path, bridge_db: str, factory: SessionFactory, amqp_url: str, clean
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "prometheus is missing: scripts/services.sh installs Debian's (apt-get install prometheus)",
            pytrace=False,
        )
    try:
        _get(f"http://{RABBITMQ_METRICS}/metrics", timeout=3)
    except (urllib.error.URLError, OSError) as exc:
        pytest.fail(
            f"RabbitMQ's Prometheus endpoint {RABBITMQ_METRICS} does not answer ({exc}): scripts/services.sh"
            " enables the rabbitmq_prometheus plugin",
            pytrace=False,
        )
    targets = dashboard_targets()
    assert targets
    problems: dict[tuple[str, str], list[str]] = {}
    settings = Settings(
        database_url=bridge_db,
        amqp_url=amqp_url,
        server_secret=TEST_SERVER_SECRET,
        jwt_secret=TEST_JWT_SECRET,
        auto_migrate=False,
    )
    # 6 chunks; chunk 2 fails every attempt (3), so the job ends FAILED with one chunk dead-lettered.
    _, job_id = make_tally_job(factory, ballots=24, chunk_size=4, metadata={"sleep": 0.5, "poison": [2]})
    node_env = {
        "AMARVOTE_SERVER_SECRET": TEST_SERVER_SECRET,
        # Fixed by default (44227, 44217), so another session's cluster may hold them.
        "DASHBOARD_METRIC_PORT": str(_free_port()),
        "AUTOSCALER_METRIC_PORT": str(_free_port()),
    }
    with (
        ray_cluster(node_env, cpus=2, own_temp_dir=True, dashboard=True) as cluster,
        api_server(settings) as api,
    ):
        assert cluster.temp_dir is not None
        discovery = Path(cluster.temp_dir) / "session_latest" / "prom_metrics_service_discovery.json"
        wait_for(discovery.exists, timeout=30)
        with prometheus(binary, tmp_path, prometheus_config(api, discovery)) as prom:
            relay = Relay(factory, RabbitMQPublisher(amqp_url), poll_interval=0.1)
            bridge = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "tests" / "bridge" / "run_bridge.py"),
                    bridge_db,
                    amqp_url,
                    cluster.address,
                ],
                env={**os.environ, **cluster.client_env, "RAY_AUTH_MODE": "token", **node_env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                with InThread(relay):
                    ended = job_ended(factory, job_id)

                    def tally_ended() -> bool:
                        assert bridge.poll() is None, "the bridge exited"
                        return ended()

                    wait_for(tally_ended, timeout=60)
                    assert job_row(factory, job_id).status == "FAILED"
                token = issue_token(settings, "operator", Role.ADMIN)
                for path in ("/health", f"/api/jobs/{job_id}/status"):
                    _get_with(f"{api}{path}", token)
                # The metrics show the tally: its chunks done and its final failure, its job FAILED.
                wait_for(
                    lambda: (
                        _value(prom, "sum(ray_amarvote_chunks_done_total)") >= 5
                        and _value(prom, 'sum(ray_amarvote_chunks_failed_total{final="true"})') >= 1
                        and _value(prom, 'sum(amarvote_jobs{status="FAILED"})') >= 1
                    ),
                    timeout=40,
                    interval=0.5,
                )
                # With the bridge still up (its gauge goes with it). A rate needs two samples after a
                # change, and RabbitMQ refreshes its queue metrics every 5 s.
                deadline = time.monotonic() + 15
                while True:
                    problems = {}
                    for title, expr, legend in targets:
                        if found := problems_of(prom, expr, legend):
                            problems[(title, expr)] = found
                    if not problems or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                if problems:  # what was scraped, for the report
                    scraped = json.loads(_get(f"{prom}/api/v1/targets"))["data"]["activeTargets"]
                    for t in scraped:
                        print("target", t["scrapeUrl"], t["health"], t["lastError"])
                    print("metrics:", json.loads(_get(f"{prom}/api/v1/label/__name__/values"))["data"])
            finally:
                bridge.terminate()
                try:
                    out, _ = bridge.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    bridge.kill()
                    out, _ = bridge.communicate()
                print("bridge's output:\n" + out[-4000:])  # shown when the test fails
    report = "\n".join(f"{title}: {expr}\n    {'; '.join(p)}" for (title, expr), p in problems.items())
    assert not problems, f"dashboard queries without what their panels show:\n{report}"


def _get_with(url: str, token: str) -> None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
