"""The API as ``amarvote serve`` runs it (``uvicorn cli.api:app --factory``): ``service.api.app`` with the
configured broker's queue reader for the console's queues page (the API layer cannot import the bridge)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from bridge.broker import QueueStats
from service.api.app import create_app
from service.settings import Settings


def queue_reader(settings: Settings, cache_seconds: float = 1.0) -> Callable[[], list[dict[str, Any]]] | None:
    """The broker's queue depths as dicts, read at most once a ``cache_seconds`` however many consoles
    poll; None on the embedded default (the API's own outbox reading is the queue there)."""
    if settings.embedded or not settings.amqp_url:
        return None
    from bridge.brokers.rabbitmq import RabbitMQQueueStats

    stats: QueueStats = RabbitMQQueueStats(settings.amqp_url)
    cached: dict[str, Any] = {"at": -cache_seconds, "value": []}

    def read() -> list[dict[str, Any]]:
        now = time.monotonic()
        if now - cached["at"] >= cache_seconds:
            cached["value"] = [dataclasses.asdict(q) for q in stats.queue_depths()]
            cached["at"] = now
        return [dict(q) for q in cached["value"]]

    return read


def app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(settings, queue_depths=queue_reader(settings))
