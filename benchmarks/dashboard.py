"""The operator's dashboard during a benchmark run, drawn from the same series Grafana would show.

``deploy/grafana/amarvote-dashboard.json`` plots the custom Ray metrics (``bridge/metrics.py``) and the
RabbitMQ queue depths. No Grafana runs on these machines (it is in none of the registries they reach),
so a benchmark scrapes the same sources while it runs (every Ray node's Prometheus endpoint, and the
queues through ``rabbitmqctl``) and this module draws the dashboard's main panels from those samples:
chunks done and ballots per second by operation, chunks in flight, queue depth, chunk latency (p95 over
the last 30 s, from the histogram's buckets) and the chunk tasks' memory.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Sample:
    t: float
    series: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)
    task_rss_mib: float = 0.0
    tasks: int = 0


def _metric(name: str) -> str:
    name = name.removeprefix("ray_")
    return name.removesuffix("_total")


KEEP = ("operation", "worker", "le")


class Scraper:
    """Samples the Ray nodes' metrics, the vhost's queues and the chunk tasks' RSS every ``interval``."""

    def __init__(self, metrics_ports: Sequence[int], vhost: str | None, interval: float = 5.0) -> None:
        self.ports = list(metrics_ports)
        self.vhost = vhost
        self.interval = interval
        self.samples: list[Sample] = []
        self.marks: list[tuple[float, str]] = []
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def mark(self, label: str) -> None:
        """A phase starts now (drawn as a vertical line)."""
        self.marks.append((time.monotonic() - self._t0, label))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self._sample())
            except Exception:  # a node restarting: skip this sample
                continue

    def _sample(self) -> Sample:
        s = Sample(time.monotonic() - self._t0)
        for port in self.ports:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                if "amarvote_" not in family.name:
                    continue
                for m in family.samples:
                    labels = tuple(sorted((k, v) for k, v in m.labels.items() if k in KEEP))
                    key = (_metric(m.name), labels)
                    s.series[key] = s.series.get(key, 0.0) + float(m.value)
        if self.vhost:
            out = subprocess.run(
                [
                    "rabbitmqctl",
                    "-q",
                    "list_queues",
                    "-p",
                    self.vhost,
                    "name",
                    "messages",
                    "--formatter",
                    "json",
                ],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout
            s.queues = {q["name"]: int(q["messages"]) for q in json.loads(out or "[]")}
        for p in psutil.process_iter(["cmdline", "memory_info"]):
            if "ray::chunk:" in " ".join(p.info.get("cmdline") or []) and p.info.get("memory_info"):
                s.tasks += 1
                s.task_rss_mib = max(s.task_rss_mib, p.info["memory_info"].rss / 2**20)
        return s

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def dump(self) -> list[dict[str, Any]]:
        return [
            {
                "t": s.t,
                "series": [[k[0], dict(k[1]), v] for k, v in s.series.items()],
                "queues": s.queues,
                "task_rss_mib": s.task_rss_mib,
                "tasks": s.tasks,
            }
            for s in self.samples
        ]


def _by(samples: list[Sample], metric: str, label: str) -> dict[str, list[tuple[float, float]]]:
    """Per value of ``label``: (t, value) of a metric summed over its other labels."""
    out: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        acc: dict[str, float] = {}
        for (name, labels), v in s.series.items():
            if name == metric:
                key = dict(labels).get(label, "")
                acc[key] = acc.get(key, 0.0) + v
        for k, v in acc.items():
            out.setdefault(k, []).append((s.t, v))
    return out


def _rate(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t1 > t0:
            xs.append(t1)
            ys.append(max(0.0, v1 - v0) / (t1 - t0))
    return xs, ys


def _p95(samples: list[Sample], window: float = 30.0) -> dict[str, tuple[list[float], list[float]]]:
    """The 95th percentile of chunk latency per operation over a trailing window, from bucket counts."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    buckets = [
        {
            (dict(k[1]).get("operation", ""), dict(k[1]).get("le", "")): v
            for k, v in s.series.items()
            if k[0] == "amarvote_chunk_latency_seconds_bucket"
        }
        for s in samples
    ]
    for i, s in enumerate(samples):
        j = max((k for k in range(i + 1) if samples[k].t <= s.t - window), default=0)
        for op in {op for op, _ in buckets[i]}:
            counts = sorted(
                ((float("inf") if le == "+Inf" else float(le)), v - buckets[j].get((op, le), 0.0))
                for (o, le), v in buckets[i].items()
                if o == op
            )
            total = counts[-1][1] if counts else 0.0
            if total <= 0:
                continue
            bound = next(le for le, c in counts if c >= 0.95 * total)
            if bound != float("inf"):
                xs, ys = out.setdefault(op, ([], []))
                xs.append(s.t)
                ys.append(bound)
    return out


def render(scraper: Scraper, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = scraper.samples
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    panels = axes.ravel()

    for op, pts in sorted(_by(samples, "amarvote_chunks_done", "operation").items()):
        panels[0].plot(*_rate(pts), label=op)
    panels[0].set_title("Chunks done per second, by operation")
    for op, pts in sorted(_by(samples, "amarvote_ballots_processed", "operation").items()):
        panels[1].plot(*_rate(pts), label=op)
    panels[1].set_title("Ballots per second")
    for worker, pts in sorted(_by(samples, "amarvote_chunks_in_flight", "worker").items()):
        panels[2].plot([t for t, _ in pts], [v for _, v in pts], label=worker.split(":")[0] or "executor")
    panels[2].set_title("Chunks in flight, by executor")
    names = sorted({q for s in samples for q, n in s.queues.items() if n})
    for q in names:
        panels[3].plot([s.t for s in samples], [s.queues.get(q, 0) for s in samples], label=q)
    panels[3].set_title("Queue depth (ready + unacked)")
    for op, (xs, ys) in sorted(_p95(samples).items()):
        panels[4].plot(xs, ys, label=op)
    panels[4].set_title("Chunk latency p95 (s, last 30 s)")
    panels[5].plot([s.t for s in samples], [s.task_rss_mib for s in samples], label="largest chunk task")
    panels[5].set_title("Chunk task RSS (MiB)")
    for ax in panels:
        for t, label in scraper.marks:
            ax.axvline(t, color="grey", lw=0.6, ls=":")
            ax.text(t, ax.get_ylim()[1], label, fontsize=7, rotation=90, va="top", color="grey")
        ax.set_xlabel("seconds")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
