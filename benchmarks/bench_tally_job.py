"""A tally job's time, split into compute and overhead (queue, bridge, database), for 1 and 2 Ray workers.

The same election (real ElectionGuard ballots, every proof checked) is tallied as a job through the
whole production path: outbox → relay → RabbitMQ → bridge → Ray task → PostgreSQL → finalize.

- **compute**: the tally arithmetic of every chunk run directly in this process, one chunk after the
  other, with nothing else around it: decode the ballots, ``validate_ballots``, ``accumulate``, and
  the product of the chunk tallies. This is what any design has to pay.
- **job wall time**: from the job's creation (its rows and outbox committed) to COMPLETED as seen by
  polling PostgreSQL, with W Ray workers (``ray.init(num_cpus=W)``, one chunk per CPU, the bridge's
  ``max_in_flight = W``).
- **overhead** = wall − compute / W: relay and publish, broker round trips, claim, Ray scheduling,
  loading chunks from PostgreSQL, writing results, the finalizer, and (on a 2-core machine) the
  bridge's own process competing with the workers for CPU.

It also measures the peak memory of one chunk task (``--measure-memory``): a fresh process runs the
real tally body on one chunk of ``chunk_size`` ballots and reports its peak RSS above the baseline of
a process that has imported everything (the figure behind ``task_memory_mb``).

    python benchmarks/bench_tally_job.py [--ballots 400] [--chunk-size 50] [--workers 1,2]
                                         [--measure-memory 5000]

Writes benchmarks/results/bench_tally_job.{md,json,png}. Needs PostgreSQL and RabbitMQ (as the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine, text

ADMIN_URL = os.environ.get("AMARVOTE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("AMARVOTE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "amarvote-bench-ballots"
CANDIDATES = ["A", "B", "C", "D"]


TIMING_FILE = Path(os.environ.get("TMPDIR", "/tmp")) / "amarvote-bench-timing.log"


def timed_tally(ctx):  # type: ignore[no-untyped-def]
    """The real tally body, timed on the worker (the bridge runs this by import path)."""
    from bridge.tasks.tally import run

    t = time.perf_counter()
    outcome = run(ctx)
    with TIMING_FILE.open("a") as f:
        f.write(f"{ctx.claim.task_id} {time.perf_counter() - t}\n")
    return outcome


# ------------------------------------------------------------------------------------------ setup
def make_database() -> tuple[str, str]:
    name = f"amarvote_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(name: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_vhost() -> tuple[str, str]:
    vhost = f"amarvote_bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    return vhost, f"{AMQP_BASE}/{vhost}"


def make_election(url: str, ballots: int) -> int:
    """An election with ``ballots`` real encrypted ballots (cached between runs), closed."""
    from compute.ballot import BallotBoxState, decode_submitted_ballot, encode_submitted_ballot
    from service.db.models import Ballot, Election, Guardian
    from service.db.session import session_factory
    from service.elections import crypto

    CACHE.mkdir(exist_ok=True)
    cache = CACHE / f"election-{ballots}.pickle"
    if cache.exists():
        data = pickle.loads(cache.read_bytes())
    else:
        manifest, manifest_hash = crypto.simple_manifest(CANDIDATES, None, 1, "bench")
        _privates, records, context = crypto.key_ceremony(3, 2, manifest_hash, ["g1", "g2", "g3"])
        payloads = []
        t = time.perf_counter()
        for i in range(ballots):
            pb = {
                "object_id": f"ballot-{i}",
                "style_id": "ballot-style-1",
                "contests": [
                    {
                        "object_id": "contest-1",
                        "ballot_selections": [{"object_id": CANDIDATES[i % 4], "vote": 1}],
                    }
                ],
            }
            b = crypto.encrypt_plaintext(pb, manifest, context, 1).submitted(BallotBoxState.CAST)
            payloads.append(encode_submitted_ballot(b))
        print(f"encrypted {ballots} ballots in {time.perf_counter() - t:.1f} s (cached in {cache})")
        data = {
            "manifest": manifest,
            "hash": manifest_hash,
            "records": records,
            "context": context,
            "payloads": payloads,
        }
        cache.write_bytes(pickle.dumps(data))
    factory = session_factory(url)
    with factory.begin() as s:
        e = Election(
            name="bench",
            state="closed",
            manifest=data["manifest"],
            manifest_hash=data["hash"],
            number_of_guardians=3,
            quorum=2,
            context=data["context"],
        )
        s.add(e)
        s.flush()
        for r in data["records"]:
            s.add(
                Guardian(
                    election_id=e.id,
                    guardian_id=r["guardian_id"],
                    sequence_order=r["sequence_order"],
                    public_record=r,
                )
            )
        for p in data["payloads"]:
            b = decode_submitted_ballot(p)
            s.add(Ballot(election_id=e.id, object_id=b.object_id, state=1, code="c", payload=p))
        return e.id


def reset_tally(url: str, election_id: int) -> None:
    """Benchmark only: forget the previous tally job so the same election is tallied again."""
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("DELETE FROM outbox"))
        c.execute(text("DELETE FROM chunk_task"))
        c.execute(text("DELETE FROM election_center WHERE election_id = :e"), {"e": election_id})
        c.execute(text("DELETE FROM election_job WHERE election_id = :e"), {"e": election_id})
        c.execute(
            text("UPDATE election SET state='closed', encrypted_tally=NULL WHERE id = :e"), {"e": election_id}
        )
    engine.dispose()


# ------------------------------------------------------------------------------------------ measures
def direct_compute(url: str, election_id: int, chunk_size: int) -> dict[str, float]:
    """The tally arithmetic alone, chunk by chunk in this process (ballots read up front, not timed)."""
    from compute.ballot import decode_submitted_ballot
    from compute.tally import accumulate, new_tally, sum_tallies
    from compute.validate import validate_ballots
    from service.db.models import Election
    from service.db.session import session_factory
    from service.elections import crypto

    with session_factory(url)() as s:
        e = s.get(Election, election_id)
        internal, context = crypto.internal_manifest(e.manifest), crypto.context_of(e.context)
        payloads = list(
            s.scalars(
                text("SELECT payload FROM ballot WHERE election_id = :e ORDER BY seq").bindparams(
                    e=election_id
                )
            )
        )
    t0 = time.perf_counter()
    tallies = []
    for i in range(0, len(payloads), chunk_size):
        ballots = [decode_submitted_ballot(p) for p in payloads[i : i + chunk_size]]
        assert not validate_ballots(ballots, internal, context)
        tallies.append(accumulate(new_tally(internal), ballots))
    sum_tallies(tallies)
    return {"compute_s": time.perf_counter() - t0, "chunks": len(tallies)}


def job_run(url: str, amqp_url: str, election_id: int, chunk_size: int, workers: int) -> dict[str, float]:
    import ray

    from bridge.brokers.rabbitmq import RabbitMQBroker, RabbitMQPublisher
    from bridge.executor import Executor
    from bridge.reconciler import Reconciler
    from bridge.relay import Relay
    from service.db.models import ElectionJob
    from service.db.session import session_factory
    from service.jobs import planning
    from service.settings import Settings

    reset_tally(url, election_id)
    settings = Settings(database_url=url, amqp_url=amqp_url, max_in_flight=workers, task_memory_mb=256)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    # Warm the workers (process start, imports) so the job measures steady state, not Ray's start.
    ray.get([ray.remote(lambda: __import__("bridge.tasks.tally")).remote() for _ in range(workers)])
    factory = session_factory(url)
    relay = Relay(factory, RabbitMQPublisher(amqp_url), poll_interval=0.05)
    reconciler = Reconciler(factory, interval=30, stale_after=timedelta(seconds=600))
    TIMING_FILE.write_text("")
    bridge = Executor(
        factory,
        RabbitMQBroker(amqp_url),
        settings,
        bodies={"TALLY": "benchmarks.bench_tally_job:timed_tally"},
    )
    threads = [threading.Thread(target=x.run, daemon=True) for x in (relay, reconciler, bridge)]
    for t in threads:
        t.start()
    assert bridge.ready.wait(30)
    t0 = time.perf_counter()
    with factory.begin() as s:
        job_id = planning.create_tally_job(s, election_id, chunk_size).job_id
    while True:
        with factory() as s:
            job = s.get(ElectionJob, job_id)
            if job.status in ("COMPLETED", "FAILED"):
                break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    assert job.status == "COMPLETED", job.error_message
    for x in (relay, reconciler, bridge):
        x.stop()
    for t in threads:
        t.join(timeout=60)
    ray.shutdown()
    body = sum(float(line.split()[1]) for line in TIMING_FILE.read_text().splitlines() if line.strip())
    return {"workers": workers, "wall_s": wall, "chunks": job.total_chunks, "body_s": body}


MEASURE_SNIPPET = r"""
import sys, threading, time
sys.path.insert(0, {root!r})
import psutil
from service.db.session import in_transaction, session_factory
from bridge.tasks import ChunkContext
from service.settings import Settings
import bridge.tasks.tally as tally_body
from service.db.models import ChunkTask
from service.jobs import transitions
from sqlalchemy import select
url = {url!r}
f = session_factory(url)
task_id = in_transaction(f, lambda s: s.scalars(select(ChunkTask.id).order_by(ChunkTask.id)).first())
claim = in_transaction(f, lambda s: transitions.claim(s, task_id, "measure", transitions.Policy()).lease)
proc = psutil.Process()
base = peak = proc.memory_info().rss
done = threading.Event()
def sample():
    global peak
    while not done.wait(0.005):
        peak = max(peak, proc.memory_info().rss)
t = threading.Thread(target=sample); t.start()
ctx = ChunkContext(claim=claim, database_url=url, settings=Settings())
t0 = time.perf_counter()
tally_body.run(ctx)
seconds = time.perf_counter() - t0
done.set(); t.join()
print(base, peak, ctx.ballots_processed, seconds)
"""


def measure_memory(url: str, election_id: int, chunk_size: int) -> dict[str, float]:
    from service.db.session import session_factory
    from service.jobs import planning

    reset_tally(url, election_id)
    with session_factory(url).begin() as s:
        have = s.execute(
            text("SELECT count(*) FROM ballot WHERE election_id = :e"), {"e": election_id}
        ).scalar()
        if have < chunk_size:
            # Fill one chunk with copies (new row ids, same payloads): every copy is decoded and its
            # proofs checked like a new ballot; the tally counts a ballot id once, so memory for the
            # chunk's id set is slightly under-measured (a few hundred KiB for 5,000 ids).
            reps = -(-chunk_size // have) - 1
            s.execute(
                text(
                    "INSERT INTO ballot (election_id, object_id, state, code, payload) "
                    "SELECT election_id, object_id || '-copy-' || k, state, code || '-copy-' || k, payload "
                    "FROM ballot, generate_series(1, :reps) k WHERE election_id = :e"
                ),
                {"e": election_id, "reps": reps},
            )
        planning.create_tally_job(s, election_id, chunk_size)
    code = MEASURE_SNIPPET.format(root=str(Path(__file__).resolve().parent.parent), url=url)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    base, peak, ballots, seconds = out.split()[-4:]
    assert int(ballots) == chunk_size, (ballots, chunk_size)
    return {
        "chunk_size": chunk_size,
        "baseline_mib": int(base) / 2**20,
        "peak_mib": int(peak) / 2**20,
        "chunk_mib": (int(peak) - int(base)) / 2**20,
        "seconds": float(seconds),
    }


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ballots", type=int, default=400)
    ap.add_argument("--chunk-size", type=int, default=50)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument(
        "--measure-memory",
        type=int,
        default=0,
        metavar="CHUNK",
        help="also measure the peak memory of one chunk of CHUNK ballots (e.g. 5000)",
    )
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from service.db import migrate

    db_name, url = make_database()
    vhost, amqp_url = make_vhost()
    try:
        migrate.upgrade(url)
        election_id = make_election(url, args.ballots)
        direct = direct_compute(url, election_id, args.chunk_size)
        print(
            f"compute alone: {direct['compute_s']:.2f} s for {args.ballots} ballots"
            f" in {direct['chunks']} chunks"
        )
        runs = []
        for w in (int(x) for x in args.workers.split(",")):
            r = job_run(url, amqp_url, election_id, args.chunk_size, w)
            r["ideal_s"] = direct["compute_s"] / w
            r["overhead_s"] = r["wall_s"] - r["ideal_s"]
            # Inside the tasks, beyond the arithmetic: loading the chunk and election, writing the
            # result, a new worker's first-use costs (imports, fixed-base tables), CPU contention.
            r["in_task_s"] = (r["body_s"] - direct["compute_s"]) / w
            # Outside the tasks: outbox relay, broker, claim, Ray scheduling, ack, finalize, polling.
            r["outside_s"] = r["wall_s"] - r["body_s"] / w
            runs.append(r)
            print(
                f"{w} worker(s): wall {r['wall_s']:.2f} s, compute/W {r['ideal_s']:.2f} s, overhead"
                f" {r['overhead_s']:.2f} s (in tasks {r['in_task_s']:.2f} s, outside {r['outside_s']:.2f} s)"
            )
        memory = measure_memory(url, election_id, args.measure_memory) if args.measure_memory else None
        if memory:
            print(f"memory of one {args.measure_memory}-ballot chunk: {memory}")
    finally:
        drop_database(db_name)
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
    write_results(args, direct, runs, memory)


def write_results(args, direct, runs, memory) -> None:  # type: ignore[no-untyped-def]
    RESULTS.mkdir(exist_ok=True)
    doc = {
        "ballots": args.ballots,
        "chunk_size": args.chunk_size,
        "cpus": os.cpu_count(),
        "compute_s": direct["compute_s"],
        "runs": runs,
        "memory": memory,
    }
    (RESULTS / "bench_tally_job.json").write_text(json.dumps(doc, indent=2))
    lines = [
        f"# Tally job: compute vs overhead ({args.ballots} ballots, chunks of {args.chunk_size},"
        f" {os.cpu_count()} CPUs)",
        "",
        f"Compute alone (decode + validate every proof + accumulate + product, one process): "
        f"{direct['compute_s']:.2f} s ({1000 * direct['compute_s'] / args.ballots:.1f} ms/ballot).",
        "",
        "| Ray workers | job wall (s) | compute / W (s) | overhead (s) | overhead share |"
        " in tasks, not compute (s) | outside tasks: queue, bridge, Ray, DB (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    legend = [
        "",
        "overhead = wall − compute / W, split into: *in tasks, not compute* = (sum of the task bodies'"
        " times − compute) / W: loading the chunk and the election from PostgreSQL, writing the result,"
        " each new Ray worker's first-use costs (imports, fixed-base tables), CPU contention; and"
        " *outside tasks* = wall − sum of body times / W: outbox relay, RabbitMQ, claim, Ray scheduling,"
        " ack, the finalizer, and the bridge process sharing the machine's CPUs with the workers.",
    ]
    for r in runs:
        lines.append(
            f"| {r['workers']} | {r['wall_s']:.2f} | {r['ideal_s']:.2f} | {r['overhead_s']:.2f} |"
            f" {100 * r['overhead_s'] / r['wall_s']:.0f}% | {r['in_task_s']:.2f} | {r['outside_s']:.2f} |"
        )
    lines += legend
    if memory:
        lines += [
            "",
            f"Peak memory of one {memory['chunk_size']}-ballot chunk task: "
            f"{memory['chunk_mib']:.1f} MiB above a {memory['baseline_mib']:.0f} MiB process baseline"
            f" (peak RSS {memory['peak_mib']:.0f} MiB, sampled every 5 ms; the chunk took"
            f" {memory['seconds']:.1f} s).",
        ]
    (RESULTS / "bench_tally_job.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [f"{r['workers']} worker(s)" for r in runs]
        ax.bar(labels, [r["ideal_s"] for r in runs], label="compute / W")
        ax.bar(labels, [r["overhead_s"] for r in runs], bottom=[r["ideal_s"] for r in runs], label="overhead")
        ax.set_ylabel("seconds")
        ax.set_title(f"Tally job, {args.ballots} ballots, chunks of {args.chunk_size}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(RESULTS / "bench_tally_job.png", dpi=120)
    except ImportError:
        pass
    print((RESULTS / "bench_tally_job.md").read_text())


if __name__ == "__main__":
    main()
