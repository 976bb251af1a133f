"""The custom Ray metrics are created and recorded inside a Ray worker (the dashboard exports them)."""

from __future__ import annotations

import ray


@ray.remote
def _record() -> list[str]:
    from bridge import metrics

    metrics.chunk_done("TALLY")
    metrics.chunk_failed("TALLY", final=False)
    metrics.observe_chunk("TALLY", 1.5, 5000)
    m = metrics._get()
    return sorted(m) if m else []


def test_metrics_record_in_a_ray_worker(ray_local) -> None:  # type: ignore[no-untyped-def]
    assert ray.get(_record.remote()) == ["ballots", "done", "failed", "in_flight", "latency"]
