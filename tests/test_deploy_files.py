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
