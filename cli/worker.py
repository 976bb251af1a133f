"""The composition of a worker process: which broker the executor reads, and what runs beside it.

- With an AMQP URL: the executor over RabbitMQ, with the outbox relay (RabbitMQ publisher) and the
  housekeeping in threads beside it, so one process per machine is a complete worker. At scale, run relays
  and housekeeping on their own (``amarvote relay``, ``amarvote reconcile``): several of each may run, they
  coordinate through ``SKIP LOCKED``.
- Without: the executor over the embedded outbox, with the housekeeping beside it.

The housekeeping is three small loops, one job each: the reconciler (stuck tasks republished or failed,
stuck jobs noted), the callback sender (when a callback secret is set) and the escrow sweeper.

Connecting to Ray runs the start-up probe (``bridge.probe``) first.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from bridge.broker import Broker
from bridge.callback_sender import CallbackConfig, CallbackSender
from bridge.escrow_sweeper import EscrowSweeper
from bridge.executor import Executor
from bridge.ray_runtime import connect
from bridge.reconciler import Reconciler
from bridge.relay import Relay
from service.db.session import SessionFactory, session_factory
from service.settings import Settings


class Service(Protocol):
    """A long-running part of a worker: ``run()`` blocks until ``stop()`` (from any thread)."""

    def run(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Worker:
    """The executor in the calling thread, helpers (relay, housekeeping) in threads beside it."""

    executor: Executor
    helpers: list[Service] = field(default_factory=list)

    def run(self) -> None:
        with _beside(self.helpers):
            self.executor.run()

    def stop(self) -> None:
        self.executor.stop()


@dataclass
class Together:
    """Several services run as one: each in its own thread until ``stop()``, then all stopped."""

    services: list[Service]
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with _beside(self.services):
            self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def _beside(services: list[Service]) -> Iterator[None]:
    threads = [threading.Thread(target=s.run, name=type(s).__name__, daemon=True) for s in services]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        for s in services:
            s.stop()
        for t in threads:
            t.join(timeout=30)


def reconcile_window(settings: Settings) -> timedelta:
    # A message may sit in a queue behind a backlog; twice the lease keeps duplicates rare.
    return timedelta(seconds=2 * settings.lease_seconds)


def callback_config(settings: Settings) -> CallbackConfig | None:
    """What the callback sender needs; None when no callback secret is set."""
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
        policy=Policy.from_settings(settings),
        stuck_after=timedelta(seconds=settings.stuck_after_seconds),
    )


def make_housekeeping(settings: Settings, factory: SessionFactory, interval: float = 30.0) -> list[Service]:
    """The reconciler and the escrow sweeper every ``interval``, and the callback sender (every second)
    when callbacks are configured."""
    services: list[Service] = [
        make_reconciler(settings, factory, interval),
        EscrowSweeper(factory, retention=timedelta(hours=settings.escrow_retention_hours), interval=interval),
    ]
    config = callback_config(settings)
    if config is not None:
        services.append(CallbackSender(factory, config))
    return services


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


def make_worker(settings: Settings, *, with_relay: bool = True, with_housekeeping: bool = True) -> Worker:
    """The worker these settings call for, connected to Ray (``settings.ray_address`` or a local Ray).

    Refuses (``ClusterMismatch``) a cluster whose nodes lack this service's server secret or version.
    """
    connect(settings)
    factory = session_factory(settings.sqlalchemy_url)
    helpers: list[Service] = []
    if with_relay and not settings.embedded:
        helpers.append(make_relay(settings, factory))
    if with_housekeeping:
        helpers.extend(make_housekeeping(settings, factory))
    return Worker(Executor(factory, make_broker(settings, factory), settings), helpers)


def run_until_signalled(service: Service) -> None:
    """Run in the foreground until SIGTERM or SIGINT, then stop cleanly (every long-running command, and
    the test suite's bridge process, ``tests/bridge/run_bridge.py``)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: service.stop())
        signal.signal(signal.SIGINT, lambda *_: service.stop())
    service.run()
