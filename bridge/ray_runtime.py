"""Connect to Ray: a cluster by address (``AMARVOTE_RAY_ADDRESS``) or a local instance.

The dashboard of a local instance binds to 127.0.0.1 (Ray 2.60 puts token authentication in
front of it by default). A cluster's dashboard is configured where the cluster is started
(``cluster.yaml``), not here.
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from service.settings import Settings

log = logging.getLogger(__name__)


def ensure_ray(settings: Settings, **init_kwargs: Any) -> None:
    """Connect once per process (a no-op when already connected)."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    if settings.ray_address:
        kwargs["address"] = settings.ray_address
        log.info("connecting to the Ray cluster")
    else:
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1")
        log.info("starting a local Ray instance")
    kwargs.update(init_kwargs)
    ray.init(**kwargs)
