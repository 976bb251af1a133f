"""Prometheus metrics of the API (module level: one registry per process, however many apps)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import Engine, func, select

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
