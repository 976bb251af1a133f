"""Connect to Ray: a cluster by address (``AMARVOTE_RAY_ADDRESS``) or a local instance of our own.

Without an address we always start a new local instance (``address="local"``). A bare ``ray.init()``
would attach to any cluster already started on the machine by ``ray start`` (or named by
``RAY_ADDRESS``, or by a stale ``/tmp/ray/ray_current_cluster`` of a cluster long gone, where it then
waits for ever), and that cluster's workers read another environment and data directory.

The dashboard of a local instance binds to 127.0.0.1 (Ray 2.60 puts token authentication in
front of it by default). A cluster's dashboard is configured where the cluster is started
(``cluster.yaml``), not here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray

from service.settings import Settings

log = logging.getLogger(__name__)


def _token_auth_if_token_available() -> None:
    """Ray 2.60 clusters started by ``ray start`` use token authentication when a token exists
    (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``), but a client connecting by
    address stays in mode 'disabled' unless ``RAY_AUTH_MODE=token`` is set, and is refused. So when
    the operator left the mode unset and a token is at hand, use it, as ``ray start`` itself does.
    (Setting the variable alone is not enough once ``ray`` is imported: Ray's helper also reloads
    its config.)"""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def ensure_ray(settings: Settings, **init_kwargs: Any) -> None:
    """Connect once per process (a no-op when already connected)."""
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {
        "ignore_reinit_error": True,
        "log_to_driver": True,
        # ray.init sets the "ray" logger's level: the CLI's (cli/logs.py: WARNING unless --debug).
        "logging_level": os.environ.get("AMARVOTE_LIBRARY_LOG_LEVEL", "INFO"),
    }
    if settings.ray_address:
        _token_auth_if_token_available()
        kwargs["address"] = settings.ray_address
        log.info("connecting to the Ray cluster")
    else:
        kwargs.update(address="local", include_dashboard=settings.ray_dashboard, dashboard_host="127.0.0.1")
        # The workers of a local Ray are forked from this process and read their settings from the
        # environment they inherit (as a cluster node's read the one `ray start` ran in): give them the
        # data directory these settings chose, where the generated server secret lives.
        os.environ["AMARVOTE_DATA_DIR"] = str(Path(settings.data_dir).resolve())
        log.info("starting a local Ray instance")
    kwargs.update(init_kwargs)
    ray.init(**kwargs)


_probed: set[tuple[str | None, str]] = set()


def connect(settings: Settings) -> None:
    """Connect to Ray and run the start-up probe once per process (``bridge.probe``): a cluster whose
    nodes lack this service's server secret or version is refused before any work starts."""
    from bridge.probe import probe_cluster
    from service.security.secrets import secret_fingerprint, server_secret

    ensure_ray(settings)
    key = (settings.ray_address, secret_fingerprint(server_secret(settings)))
    if key not in _probed:
        probe_cluster(settings)
        _probed.add(key)
