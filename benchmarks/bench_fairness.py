"""Fair share: how long a small job submitted behind a large one waits, with the window on and off.

The production path (outbox → relay → RabbitMQ → executor → Ray → PostgreSQL) with the tests' counting
chunk body (``tests/bridge/fakes.py``, ``sleep`` seconds per chunk), so chunk time is fixed and the
figures are about scheduling, not cryptography. For each mode, in one run, alternating:

1. a large tally job of ``--large`` chunks is created; once ``--head-start`` of its chunks are done,
2. a small job of ``--small`` chunks is created;
3. measured: the small job's latency (created → COMPLETED, database times), the large job's wall time,
   the large job's chunks done when the small one completed, the deepest the tally queue got (sampled
   every 50 ms, ready messages).

Modes: ``window`` = ``AMARVOTE_JOB_WINDOW``'s default rule, 2 × max_in_flight (the relay publishes at most
that many chunks of a job in flight); ``off`` = no window (every due message published at once, as before
issue 12). Ratios within the run are the figures to read (the machine is shared and noisy).

    python benchmarks/bench_fairness.py [--large 40] [--small 2] [--sleep 0.25] [--in-flight 2] [--reps 2]
                                        [--head-start 2] [--poll 0.5]

Writes benchmarks/results/bench_fairness.{md,json}. Needs PostgreSQL and RabbitMQ (as the tests) and Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_tally_job import drop_database, make_database, make_vhost  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "amarvote-bench-server-secret-0123456789"


def run_once(
    factory: Any,
    settings: Any,
    amqp_url: str,
    *,
    window: int | None,
    large: int,
    small: int,
    sleep: float,
    head_start: int,
    poll: float,
) -> dict[str, Any]:
    from bridge.brokers.rabbitmq import RabbitMQBroker, RabbitMQPublisher
    from bridge.executor import Executor
    from bridge.relay import Relay
    from tests.bridge.fakes import BODY
    from tests.bridge.helpers_bridge import job_row, make_tally_job, queue_depth

    relay = Relay(factory, RabbitMQPublisher(amqp_url), poll_interval=poll, window=window)
    bridge = Executor(factory, RabbitMQBroker(amqp_url), settings, bodies={"TALLY": BODY}, shutdown_grace=10)
    threads = [threading.Thread(target=x.run, daemon=True) for x in (relay, bridge)]
    depths: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            depths.append(queue_depth(amqp_url, "tally.queue"))

    sampler = threading.Thread(target=sample, daemon=True)
    for t in threads:
        t.start()
    assert bridge.ready.wait(60)
    sampler.start()
    try:
        _, big = make_tally_job(factory, ballots=large, chunk_size=1, metadata={"sleep": sleep})
        while job_row(factory, big).processed_chunks < head_start:
            time.sleep(0.02)
        _, little = make_tally_job(factory, ballots=small, chunk_size=1, metadata={"sleep": sleep})
        while job_row(factory, little).status not in ("COMPLETED", "FAILED"):
            time.sleep(0.02)
        big_at_small_end = job_row(factory, big).processed_chunks
        while job_row(factory, big).status not in ("COMPLETED", "FAILED"):
            time.sleep(0.05)
    finally:
        stop.set()
        sampler.join()
        relay.stop()
        bridge.stop()
        for t in threads:
            t.join(timeout=60)
    b, s = job_row(factory, big), job_row(factory, little)
    assert b.status == s.status == "COMPLETED", (b.status, s.status)
    return {
        "small_latency_s": (s.completed_at - s.created_at).total_seconds(),
        "large_wall_s": (b.completed_at - b.created_at).total_seconds(),
        "large_done_at_small_end": big_at_small_end,
        "max_queue_depth": max(depths) if depths else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", type=int, default=40, help="chunks of the large job")
    ap.add_argument("--small", type=int, default=2, help="chunks of the small job")
    ap.add_argument("--sleep", type=float, default=0.25, help="seconds per chunk")
    ap.add_argument("--in-flight", type=int, default=2, help="the bridge's max_in_flight (= Ray CPUs)")
    ap.add_argument("--head-start", type=int, default=2, help="large chunks done before the small job")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument(
        "--poll", type=float, default=0.5, help="the relay's poll interval (0.5 s, its production default)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import ray

    from service.db import migrate
    from service.db.session import session_factory
    from service.settings import Settings

    db_name, url = make_database()
    vhost, amqp_url = make_vhost()
    os.environ["AMARVOTE_SERVER_SECRET"] = SECRET
    try:
        migrate.upgrade(url)
        ray.init(
            address="local",
            num_cpus=args.in_flight,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"AMARVOTE_SERVER_SECRET": SECRET}},
        )
        ray.get(
            [ray.remote(lambda: __import__("tests.bridge.fakes")).remote() for _ in range(args.in_flight)]
        )
        settings = Settings(
            database_url=url,
            amqp_url=amqp_url,
            max_in_flight=args.in_flight,
            task_memory_mb=64,
            server_secret=SECRET,
        )
        factory = session_factory(url)
        modes: dict[str, int | None] = {"window": settings.window, "off": None}
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
        for rep in range(args.reps):
            for mode, window in modes.items():
                r = run_once(
                    factory,
                    settings,
                    amqp_url,
                    window=window,
                    large=args.large,
                    small=args.small,
                    sleep=args.sleep,
                    head_start=args.head_start,
                    poll=args.poll,
                )
                print(f"rep {rep + 1} {mode:>6}: {r}", flush=True)
                runs[mode].append(r)
    finally:
        ray.shutdown()
        drop_database(db_name)
        import subprocess

        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)

    def med(mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[mode]))

    summary = {
        m: {
            k: med(m, k)
            for k in ("small_latency_s", "large_wall_s", "large_done_at_small_end", "max_queue_depth")
        }
        for m in modes
    }
    ratio_small = summary["off"]["small_latency_s"] / summary["window"]["small_latency_s"]
    ratio_large = summary["window"]["large_wall_s"] / summary["off"]["large_wall_s"]
    result = {
        "params": {**vars(args), "out": str(args.out), "window": settings.window},
        "runs": runs,
        "median": summary,
        "small_latency_ratio_off_over_window": ratio_small,
        "large_wall_ratio_window_over_off": ratio_large,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "id": uuid.uuid4().hex[:8],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_fairness.json").write_text(json.dumps(result, indent=2) + "\n")
    w = settings.window
    lines = [
        "# Fair share: a small job submitted behind a large one",
        "",
        f"Large job {args.large} chunks, small job {args.small} chunks, {args.sleep} s per chunk"
        f" (counting body), bridge max_in_flight {args.in_flight} on {args.in_flight} Ray CPUs,"
        f" relay polling every {args.poll} s;"
        " the small job is created once"
        f" {args.head_start} large chunks are done. Median of {args.reps} runs per mode, alternating,"
        " in one run.",
        "",
        "| mode | small job latency (s) | large job wall (s) | large chunks done when small completed |"
        " max tally.queue depth |",
        "|---|---|---|---|---|",
    ]
    for m, label in (("window", f"window W = {w}"), ("off", "no window (W = ∞)")):
        s = summary[m]
        lines.append(
            f"| {label} | {s['small_latency_s']:.2f} | {s['large_wall_s']:.2f} |"
            f" {s['large_done_at_small_end']:.0f} of {args.large} | {s['max_queue_depth']:.0f} |"
        )
    lines += [
        "",
        f"Small job latency without the window / with it: **{ratio_small:.1f}x**. Large job wall time"
        f" with the window / without: {ratio_large:.2f}. Peak RSS of the benchmark process"
        " (relay, bridge, sampler):"
        f" {result['peak_rss_mib']:.0f} MiB.",
        "",
        "    python benchmarks/bench_fairness.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "",
    ]
    (args.out / "bench_fairness.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
