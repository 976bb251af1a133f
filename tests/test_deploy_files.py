"""The deployment files parse and say what the docs promise."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_cluster_yaml_passes_rays_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    # What `ray up` does before it starts anything: fill the provider's defaults, then validate.
    validate_config(prepare_config(config))
    head = " ".join(config["head_start_ray_commands"])
    assert "--port=6380" in head, "6379 is Redis's on the machines that run services"
    assert "--dashboard-host=127.0.0.1" in head


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
