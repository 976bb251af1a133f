"""Entry points the CLI calls (``amarvote bridge``, ``relay``, ``reconcile``) and the embedded mode uses.

Each blocks until SIGTERM or SIGINT (or ``stop()`` from another thread) and then shuts down cleanly.
``run_bridge`` runs a relay and a reconciler in threads beside the consumer by default, so one process
per machine is a complete worker; at scale, run relays and reconcilers separately (several of each
may run: they coordinate through ``SKIP LOCKED``).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bridge.db import session_factory
from bridge.ray_runtime import ensure_ray
from service.settings import Settings

log = logging.getLogger(__name__)


def _on_signals(stop: Callable[[], None]) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop())
        signal.signal(signal.SIGINT, lambda *_: stop())


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


def reconcile_window(settings: Settings) -> timedelta:
    # A message may sit in a queue behind a backlog; twice the lease keeps duplicates rare.
    return timedelta(seconds=2 * settings.lease_seconds)


def escrow_retention(settings: Settings) -> timedelta:
    return timedelta(hours=settings.escrow_retention_hours)


def run_relay(settings: Settings) -> None:
    from bridge.relay import OutboxRelay

    if not settings.amqp_url:
        raise ValueError("no AMQP URL: in embedded mode the runner reads the outbox itself")
    relay = OutboxRelay(session_factory(settings.sqlalchemy_url), settings.amqp_url)
    _on_signals(relay.stop)
    relay.run()


def run_reconciler(settings: Settings, interval: float = 30.0) -> None:
    from bridge.reconciler import Reconciler

    rec = Reconciler(
        session_factory(settings.sqlalchemy_url),
        interval=interval,
        stale_after=reconcile_window(settings),
        escrow_retention=escrow_retention(settings),
    )
    _on_signals(rec.stop)
    rec.run()


@dataclass
class Worker:
    """A complete chunk executor: ``run()`` blocks until ``stop()``.

    With an AMQP URL: the consumer, with the outbox relay and the reconciler in threads beside it.
    Without: the embedded runner, which reads the outbox and reconciles by itself.
    """

    main: Any  # has run() and stop()
    helpers: list[Any] = field(default_factory=list)

    def run(self) -> None:
        threads = [threading.Thread(target=h.run, name=type(h).__name__, daemon=True) for h in self.helpers]
        for t in threads:
            t.start()
        try:
            self.main.run()
        finally:
            for h in self.helpers:
                h.stop()
            for t in threads:
                t.join(timeout=30)

    def stop(self) -> None:
        self.main.stop()


def make_worker(settings: Settings, *, with_relay: bool = True, with_reconciler: bool = True) -> Worker:
    """The executor these settings call for, connected to Ray (``settings.ray_address`` or a local Ray).

    Refuses (``ClusterMismatch``) a cluster whose nodes lack this service's server secret or version.
    """
    connect(settings)
    if settings.embedded:
        from bridge.embedded import EmbeddedRunner

        return Worker(EmbeddedRunner(settings))
    from bridge.consumer import Bridge
    from bridge.reconciler import Reconciler
    from bridge.relay import OutboxRelay

    factory = session_factory(settings.sqlalchemy_url)
    helpers: list[Any] = []
    if with_relay:
        helpers.append(OutboxRelay(factory, settings.amqp_url or ""))
    if with_reconciler:
        helpers.append(
            Reconciler(
                factory, stale_after=reconcile_window(settings), escrow_retention=escrow_retention(settings)
            )
        )
    return Worker(Bridge(settings), helpers)


def run_bridge(settings: Settings, *, with_relay: bool = True, with_reconciler: bool = True) -> None:
    """Consume chunk messages and run them on Ray until SIGTERM or SIGINT."""
    if not settings.amqp_url:
        raise ValueError("no AMQP URL: use run_embedded")
    worker = make_worker(settings, with_relay=with_relay, with_reconciler=with_reconciler)
    _on_signals(worker.stop)
    worker.run()


def run_embedded(settings: Settings, *, until_idle: bool = False, timeout: float | None = None) -> None:
    """The single-machine mode: outbox → local Ray, no broker. ``until_idle`` returns when all is done."""
    if settings.amqp_url:
        raise ValueError("an AMQP URL is set: use run_bridge")
    worker = make_worker(settings)
    if until_idle:
        worker.main.run_until_idle(timeout)
        return
    _on_signals(worker.stop)
    worker.run()


def main() -> None:
    """``python -m bridge [bridge|relay|reconcile|embedded]`` with the settings from the environment."""
    import sys

    from service.settings import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    what = sys.argv[1] if len(sys.argv) > 1 else ("embedded" if settings.embedded else "bridge")
    {
        "bridge": run_bridge,
        "relay": run_relay,
        "reconcile": run_reconciler,
        "embedded": run_embedded,
    }[what](settings)
