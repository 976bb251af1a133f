"""The composition of a worker process: which broker the executor reads, and what runs beside it.

- With an AMQP URL: the executor over RabbitMQ, with the outbox relay (RabbitMQ publisher) and the
  reconciler in threads beside it, so one process per machine is a complete worker. At scale, run relays
  and reconcilers on their own (``amarvote relay``, ``amarvote reconcile``): several of each may run, they
  coordinate through ``SKIP LOCKED``.
- Without: the executor over the embedded outbox, with the reconciler beside it.

Connecting to Ray runs the start-up probe (``bridge.probe``) first.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from bridge.broker import Broker
from bridge.executor import Executor
from bridge.ray_runtime import connect
from bridge.reconciler import CallbackConfig, Reconciler
from bridge.relay import Relay
from service.db.session import SessionFactory, session_factory
from service.settings import Settings


class Service(Protocol):
    """A long-running part of a worker: ``run()`` blocks until ``stop()`` (from any thread)."""

    def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Worker:
    """The executor in the calling thread, helpers (relay, reconciler) in threads beside it."""

    executor: Executor
    helpers: list[Service] = field(default_factory=list)

    def run(self) -> None:
        threads = [threading.Thread(target=h.run, name=type(h).__name__, daemon=True) for h in self.helpers]
        for t in threads:
            t.start()
        try:
            self.executor.run()
        finally:
            for h in self.helpers:
                h.stop()
            for t in threads:
                t.join(timeout=30)

    def stop(self) -> None:
        self.executor.stop()


def reconcile_window(settings: Settings) -> timedelta:
    # A message may sit in a queue behind a backlog; twice the lease keeps duplicates rare.
    return timedelta(seconds=2 * settings.lease_seconds)


def callback_config(settings: Settings) -> CallbackConfig | None:
    """What the reconciler needs to deliver completion callbacks; None when no callback secret is set."""
    if settings.callback_secret is None:
        return None
    return CallbackConfig(
        secret=settings.callback_secret.get_secret_value().encode(),
        allowed_urls=settings.callback_prefixes,
        max_attempts=settings.callback_max_attempts,
        backoff_seconds=settings.callback_backoff_seconds,
        timeout_seconds=settings.callback_timeout_seconds,
    )


def make_reconciler(settings: Settings, factory: SessionFactory, interval: float = 30.0) -> Reconciler:
    from service.jobs.transitions import Policy

    return Reconciler(
        factory,
        interval=interval,
        stale_after=reconcile_window(settings),
        escrow_retention=timedelta(hours=settings.escrow_retention_hours),
        policy=Policy.from_settings(settings),
        stuck_after=timedelta(seconds=settings.stuck_after_seconds),
        callbacks=callback_config(settings),
    )


def make_relay(settings: Settings, factory: SessionFactory) -> Relay:
    from bridge.brokers.rabbitmq import RabbitMQPublisher

    if not settings.amqp_url:
        raise ValueError("no AMQP URL: in the embedded mode the executor reads the outbox itself")
    return Relay(factory, RabbitMQPublisher(settings.amqp_url), window=settings.window)


def make_broker(settings: Settings, factory: SessionFactory) -> Broker:
    if settings.embedded:
        from bridge.brokers.outbox import OutboxBroker

        return OutboxBroker(factory, window=settings.window)
    from bridge.brokers.rabbitmq import RabbitMQBroker

    assert settings.amqp_url is not None
    return RabbitMQBroker(settings.amqp_url)


def make_worker(settings: Settings, *, with_relay: bool = True, with_reconciler: bool = True) -> Worker:
    """The worker these settings call for, connected to Ray (``settings.ray_address`` or a local Ray).

    Refuses (``ClusterMismatch``) a cluster whose nodes lack this service's server secret or version.
    """
    connect(settings)
    factory = session_factory(settings.sqlalchemy_url)
    helpers: list[Service] = []
    if with_relay and not settings.embedded:
        helpers.append(make_relay(settings, factory))
    if with_reconciler:
        helpers.append(make_reconciler(settings, factory))
    return Worker(Executor(factory, make_broker(settings, factory), settings), helpers)


def run_until_signalled(service: Service) -> None:
    """Run in the foreground until SIGTERM or SIGINT, then stop cleanly (every long-running command, and
    the test suite's bridge process, ``tests/bridge/run_bridge.py``)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: service.stop())
        signal.signal(signal.SIGINT, lambda *_: service.stop())
    service.run()
