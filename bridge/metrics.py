"""Custom Ray metrics (exported by the dashboard's metrics agent; see the Ray dashboard's Metrics tab).

Created lazily: a ``ray.util.metrics`` object needs a connected Ray, and importing this module must
not. Outside Ray (unit tests of the transitions, the CLI) recording is a no-op.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

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
