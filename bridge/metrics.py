"""Custom Ray metrics (exported by the dashboard's metrics agent; see the Ray dashboard's Metrics tab).

Created lazily: a ``ray.util.metrics`` object needs a connected Ray, and importing this module must
not. Outside Ray (unit tests of the transitions, the CLI) recording is a no-op.

The executor's are hooked in one place, :class:`ExecutorMetrics` (as a Dramatiq middleware would be):
what each of its decisions counts, and how many deliveries it holds.
"""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

from bridge.chunk_rules import Count, due

log = logging.getLogger(__name__)

# A default-size chunk takes 10 to 60 s (benchmarks/README.md): fine buckets there, or every quantile of a
# normal run reads as the bucket's edge. The last is the default chunk time limit.
LATENCY_BOUNDARIES = [0.1, 0.5, 1, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 90, 120, 300, 600, 1800, 3600]


@cache
def _metrics() -> dict[str, Any] | None:
    import ray

    if not ray.is_initialized():
        return None
    from ray.util.metrics import Counter, Gauge, Histogram

    return {
        "done": Counter("amarvote_chunks_done", "Chunk tasks completed", tag_keys=("operation",)),
        "failed": Counter(
            "amarvote_chunks_failed", "Chunk task attempts that failed", tag_keys=("operation", "final")
        ),
        "latency": Histogram(
            "amarvote_chunk_latency_seconds",
            "Time to run one chunk task body",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("operation",),
        ),
        "ballots": Counter(
            "amarvote_ballots_processed", "Ballots read by chunk task bodies", tag_keys=("operation",)
        ),
        "in_flight": Gauge(
            "amarvote_chunks_in_flight",
            "Chunk deliveries an executor holds (running or held)",
            tag_keys=("worker",),
        ),
    }


def _get() -> dict[str, Any] | None:
    try:
        m = _metrics()
    except Exception:  # metrics must never fail a chunk
        log.debug("metrics unavailable", exc_info=True)
        return None
    if m is None:
        _metrics.cache_clear()  # try again once Ray is up
    return m


def _safe(fn: Any) -> None:
    try:
        fn()
    except Exception:  # metrics must never fail a chunk
        log.debug("metric not recorded", exc_info=True)


def chunk_done(operation: str) -> None:
    if m := _get():
        _safe(lambda: m["done"].inc(1, tags={"operation": operation}))


def chunk_failed(operation: str, final: bool) -> None:
    if m := _get():
        _safe(lambda: m["failed"].inc(1, tags={"operation": operation, "final": str(final).lower()}))


def observe_chunk(operation: str, seconds: float, ballots: int) -> None:
    if m := _get():
        _safe(lambda: m["latency"].observe(seconds, tags={"operation": operation}))
        if ballots:
            _safe(lambda: m["ballots"].inc(ballots, tags={"operation": operation}))


def in_flight(worker: str, n: int) -> None:
    """Set by each executor (a Ray driver) as it takes and settles deliveries."""
    if m := _get():
        _safe(lambda: m["in_flight"].set(n, tags={"worker": worker}))


class ExecutorMetrics:
    """The executor's metrics: :meth:`counted` on a delivery's worker thread after each decision,
    :meth:`tick` on the main thread after each poll (the gauge is set every ``REPORT_EVERY`` seconds)."""

    REPORT_EVERY = 5.0

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self._last_report = 0.0

    def counted(self, operation: str, count: Count | None) -> None:
        """What a ``chunk_rules`` decision counts, if anything."""
        if count == Count.DONE:
            chunk_done(operation)
        elif count is not None:
            chunk_failed(operation, final=count == Count.FAILED_FINAL)

    def tick(self, in_flight_now: int) -> None:
        if due(time.monotonic(), self._last_report, self.REPORT_EVERY):
            self._last_report = time.monotonic()
            in_flight(self.worker_id, in_flight_now)
