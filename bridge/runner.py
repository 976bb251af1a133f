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
from datetime import timedelta

from bridge.db import session_factory
from bridge.ray_runtime import ensure_ray
from service.settings import Settings

log = logging.getLogger(__name__)


def _on_signals(stop: Callable[[], None]) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop())
        signal.signal(signal.SIGINT, lambda *_: stop())


def reconcile_window(settings: Settings) -> timedelta:
    # A message may sit in a queue behind a backlog; twice the lease keeps duplicates rare.
    return timedelta(seconds=2 * settings.lease_seconds)


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
        session_factory(settings.sqlalchemy_url), interval=interval, stale_after=reconcile_window(settings)
    )
    _on_signals(rec.stop)
    rec.run()


def run_bridge(settings: Settings, *, with_relay: bool = True, with_reconciler: bool = True) -> None:
    """Consume chunk messages and run them on Ray (connecting to ``settings.ray_address`` or a local Ray)."""
    from bridge.consumer import Bridge
    from bridge.reconciler import Reconciler
    from bridge.relay import OutboxRelay

    if not settings.amqp_url:
        raise ValueError("no AMQP URL: use run_embedded")
    ensure_ray(settings)
    factory = session_factory(settings.sqlalchemy_url)
    helpers: list = []
    if with_relay:
        helpers.append(OutboxRelay(factory, settings.amqp_url))
    if with_reconciler:
        helpers.append(Reconciler(factory, stale_after=reconcile_window(settings)))
    threads = [threading.Thread(target=h.run, name=type(h).__name__, daemon=True) for h in helpers]
    for t in threads:
        t.start()
    bridge = Bridge(settings)
    _on_signals(bridge.stop)
    try:
        bridge.run()
    finally:
        for h in helpers:
            h.stop()
        for t in threads:
            t.join(timeout=30)


def run_embedded(settings: Settings, *, until_idle: bool = False, timeout: float | None = None) -> None:
    """The single-machine mode: outbox → local Ray, no broker. ``until_idle`` returns when all is done."""
    from bridge.embedded import EmbeddedRunner

    ensure_ray(settings)
    runner = EmbeddedRunner(settings)
    if until_idle:
        runner.run_until_idle(timeout)
        return
    _on_signals(runner.stop)
    runner.run()


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
