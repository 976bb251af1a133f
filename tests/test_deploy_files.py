"""The deployment files parse and say what the docs promise."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-aws.yaml"])
def test_cluster_files_pass_rays_own_validation(name: str) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / name).read_text())
    # What `ray up` does before it starts anything: fill the provider's defaults, then validate.
    validate_config(prepare_config(config))
    head = " ".join(config["head_start_ray_commands"])
    assert "--port=6380" in head, "6379 is Redis's on the machines that run services"
    assert "--dashboard-host=127.0.0.1" in head
    assert "JWT" not in (ROOT / name).read_text().split("JWT secret belongs")[-1], "no token key on nodes"


def test_the_aws_cluster_is_sized_from_the_measured_chunk_memory() -> None:
    config = yaml.safe_load((ROOT / "cluster-aws.yaml").read_text())
    types = config["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}, "the head runs the bridge, not chunks"
    worker = types["worker"]
    cpus, memory = worker["resources"]["CPU"], worker["resources"]["memory"]
    from service.settings import Settings

    per_task = Settings().task_memory_mb * 2**20
    assert memory >= cpus * per_task, "every CPU can take a chunk under its memory= admission"
    assert 0 < worker["min_workers"] <= worker["max_workers"] == config["max_workers"]
    assert any("amarvote bridge" in c for c in config["head_start_ray_commands"])


def test_docker_compose_validates_with_its_own_tool(tmp_path: Path) -> None:
    """``docker-compose config`` (Debian's docker-compose, no engine needed; scripts/services.sh
    installs it) accepts the file, and refuses it without the two secrets."""
    import shutil
    import subprocess

    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is installed by scripts/services.sh"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    secrets = {"AMARVOTE_SERVER_SECRET": "s" * 40, "AMARVOTE_JWT_SECRET": "j" * 40}
    ok = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        env={**env, **secrets},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    refused = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert refused.returncode != 0 and "AMARVOTE_SERVER_SECRET" in refused.stderr


def test_compose_has_the_whole_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("postgres", "rabbitmq", "ray-head", "ray-worker", "api", "bridge", "migrate"):
        assert name in services, name
    assert services["api"]["command"].startswith("amarvote serve")
    assert services["bridge"]["command"] == "amarvote bridge"
    assert "6380" in services["ray-head"]["command"]


def test_compose_gives_each_service_only_the_secrets_its_job_needs() -> None:
    # safe_load resolves the anchors and merge keys as compose does; `docker-compose config` agrees.
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    def env(name: str) -> dict[str, str]:
        return services[name].get("environment") or {}

    assert "AMARVOTE_JWT_SECRET" in env("api"), "the API signs and checks tokens"
    for name in ("ray-head", "ray-worker", "bridge", "migrate"):
        assert "AMARVOTE_JWT_SECRET" not in env(name), f"{name} must not be able to mint API tokens"
    for name in ("api", "ray-head", "ray-worker", "bridge"):
        assert "AMARVOTE_SERVER_SECRET" in env(name), f"{name} opens or seals the key escrow"
        assert env(name)["AMARVOTE_DATABASE_URL"].startswith("postgresql"), name
    assert "AMARVOTE_SERVER_SECRET" not in env("migrate"), "the migrations need no secret"


def test_the_dashboard_reads_only_metrics_the_code_exports() -> None:
    import json
    import re

    dash = json.loads((ROOT / "deploy" / "grafana" / "amarvote-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b((?:ray_)?amarvote_[a-z_]+)", e)}
    ours = set()
    for path in ("bridge/metrics.py", "service/api/metrics.py"):
        ours |= set(re.findall(r'"(amarvote_[a-z_]+)"', (ROOT / path).read_text()))
    exported = {f"ray_{n}" for n in ours} | ours  # Ray prefixes its custom metrics with ray_
    suffixes = ("_total", "_bucket", "_sum", "_count")
    for name in names:
        base = next((name[: -len(s)] for s in suffixes if name.endswith(s)), name)
        assert name in exported or base in exported, f"the dashboard reads {name}, which nothing exports"
    assert {"ray_amarvote_chunks_in_flight", "amarvote_jobs"} <= names
