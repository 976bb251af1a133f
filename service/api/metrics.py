"""Prometheus metrics of the API (module level: one registry per process, however many apps)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import Engine, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("amarvote_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "amarvote_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
JOBS_CREATED = Counter("amarvote_jobs_created_total", "Jobs created", ["operation"])
BALLOTS_ACCEPTED = Counter("amarvote_ballots_accepted_total", "Ballots stored", ["state"])
BALLOTS_REJECTED = Counter("amarvote_ballots_rejected_total", "Ballot submissions refused")


class JobsByState(Collector):
    """``amarvote_jobs{operation, status}``: jobs by state, read from the database at each scrape (the
    truth is there, shared by every API replica; a counter kept in one process would not be)."""

    def __init__(self, engine: Engine, stuck_after: float = 600.0) -> None:
        self.engine = engine
        self.stuck_after = stuck_after

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sqlalchemy.orm import Session

        from service.db.models import ElectionJob, OperationType
        from service.jobs.status import stuck_jobs

        family = GaugeMetricFamily(
            "amarvote_jobs", "Jobs by operation and status", labels=["operation", "status"]
        )
        stuck = GaugeMetricFamily(
            "amarvote_jobs_stuck",
            "Live jobs with no chunk ending for AMARVOTE_STUCK_AFTER_SECONDS, by operation",
            labels=["operation"],
        )
        try:
            with Session(self.engine) as s:
                rows = s.execute(
                    select(ElectionJob.operation_type, ElectionJob.status, func.count()).group_by(
                        ElectionJob.operation_type, ElectionJob.status
                    )
                ).all()
                stuck_ops = [j.operation_type for j in stuck_jobs(s, self.stuck_after)]
        except Exception:  # a scrape while the database is away: no sample rather than a failed scrape
            rows, stuck_ops = [], None
        for operation, status, n in rows:
            family.add_metric([operation, status], n)
        if stuck_ops is not None:
            for op in OperationType:  # every operation, zeros included: an alert rule needs the series
                stuck.add_metric([op.value], stuck_ops.count(op.value))
        yield family
        yield stuck


_registered: dict[int, JobsByState] = {}


def register_jobs_by_state(engine: Engine, stuck_after: float | None = None) -> None:
    """One collector per process (the registry is global), following the newest app's engine."""
    collector = _registered.get(0)
    if collector is None:
        collector = _registered[0] = JobsByState(engine)
        REGISTRY.register(collector)
    collector.engine = engine
    if stuck_after is not None:
        collector.stuck_after = stuck_after


class RequestMetrics:
    """Latency and count per method, route template and status, as a pure ASGI middleware (Starlette's
    BaseHTTPMiddleware runs the app in a task group, which wraps an error raised by a body read, such
    as the body limit's 413, in an ExceptionGroup that the route's body parsing turns into a 400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router writes the matched route into this same scope.
            path = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(scope["method"], path).observe(time.perf_counter() - start)
            REQUESTS.labels(scope["method"], path, str(status)).inc()
