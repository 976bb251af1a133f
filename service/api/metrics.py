"""Prometheus metrics of the API (module level: one registry per process, however many apps)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
