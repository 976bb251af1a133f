"""Whole elections through the production path, to choose the chunk size and to see a large election run.

    python benchmarks/bench_elections.py chunk-sizes [--ballots 20000] [--nodes 1,2] [--quick]
                                                    [--sizes 250,500,1000,2500,5000,10000]
    python benchmarks/bench_elections.py large [--ballots 100000] [--chunk-size 2500] [--nodes 2]

The election (3 contests of ``tests/data/reference-data/manifest-small.json``, 5 guardians, quorum 3, 2 of
them missing at decryption, 1% of the ballots spoiled) is generated once and cached under ``$TMPDIR``
(encryption dominates set-up: about 100 ballots/s per core here). Each run loads it into a fresh PostgreSQL
database, then tallies, decrypts (3 partial and 6 compensated jobs) and combines it as jobs through the
outbox, the relay, RabbitMQ (a fresh vhost), the executor and a Ray cluster of 1 or 2 nodes started with
``ray start`` on 127.0.0.1 (1 CPU each: these machines have 2 cores). Per job: wall time, messages (= chunk
tasks), and the time outside the tasks (queue, relay, claim, Ray scheduling: wall x CPUs minus the time the
tasks ran); per run: the peak RSS of a chunk task (Ray worker processes running ``run_chunk``, sampled every
0.2 s) and of this driver.

Writes benchmarks/results/bench_chunk_size.{md,json,png} or bench_large.{md,json}, and the table into its
section of benchmarks/README.md (benchmarks/readme.py). Needs PostgreSQL and
RabbitMQ (as the tests: ``AMARVOTE_TEST_PG``, ``AMARVOTE_TEST_AMQP``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import resource
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from readme import publish  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "amarvote-bench-elections"
MANIFEST = ROOT / "tests" / "data" / "reference-data" / "manifest-small.json"
SECRET = "bench-elections-server-secret-0123456789abcdef"
GUARDIANS, QUORUM, MISSING = 5, 3, 2
# Measured (docs/field-notes.md, "Reference electionguard"): the reference on this machine, per ballot.
REFERENCE = {"encrypt_ballots_per_s": 10.6, "tally_ballots_per_s": 5.6, "decrypt_tally_s": 1.9}


# -------------------------------------------------------------------------------------------- the election


def _encrypt(args: tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]) -> list[bytes]:
    from service.elections import crypto

    plaintexts, manifest, context = args
    out = []
    for p, action in plaintexts:
        enc = crypto.encrypt_plaintext(p, manifest, context, 1)
        out.append(crypto.encode(enc.submitted(crypto.ballot_state(action)))[0])
    return out


BATCH = 1000  # ballots per cache file: the loader holds one file at a time, not the election


def election(n: int, seed: int = 7) -> dict[str, Any]:
    """Keys and ``n`` encrypted ballots (stored form), made once and cached as files of BATCH ballots,
    so neither this benchmark nor its driver's peak RSS holds the whole election."""
    folder = CACHE / f"election-{n}-{seed}"
    meta_path = folder / "meta.pickle"
    if meta_path.exists():
        return pickle.loads(meta_path.read_bytes())
    from cli.demo import synthetic_ballots
    from service.elections import crypto

    manifest, manifest_hash = crypto.parse_manifest(json.loads(MANIFEST.read_text()))
    ids = [f"guardian-{i + 1}" for i in range(GUARDIANS)]
    privates, records, context = crypto.key_ceremony(GUARDIANS, QUORUM, manifest_hash, ids)
    plaintexts, expected = synthetic_ballots(manifest, n, 100, random.Random(seed))
    batches = [(plaintexts[i : i + BATCH], manifest, context) for i in range(0, n, BATCH)]
    del plaintexts
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        for i, payloads in enumerate(pool.map(_encrypt, batches)):
            f = folder / f"ballots-{i:05d}.pickle"
            f.write_bytes(pickle.dumps(payloads))
            files.append(f.name)
    print(f"encrypted {n} ballots in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    data = {
        "ballots": n,
        "manifest": manifest,
        "context": context,
        "records": records,
        "privates": privates,
        "files": files,
        "folder": str(folder),
        "expected": {f"{c}/{s}": v for (c, s), v in expected.items()},
        "encrypt_s": time.perf_counter() - t0,
    }
    meta_path.write_bytes(pickle.dumps(data))  # last: a cache without it is incomplete and made again
    return data


def payload_batches(data: dict[str, Any]) -> Any:
    for name in data["files"]:
        yield pickle.loads((Path(data["folder"]) / name).read_bytes())


# -------------------------------------------------------------------------------------------- one run


# What each process is, by its command line: the peak RSS of every kind is reported.
KINDS = (
    ("ray::chunk:", "chunk task"),
    ("ray::IDLE", "idle Ray worker"),
    ("raylet", "raylet"),
    ("gcs_server", "Ray GCS"),
    ("dashboard", "Ray dashboard"),
    ("beam.smp", "RabbitMQ"),
    ("postgres", "PostgreSQL backend"),
)


class PeakSampler:
    """Peak RSS of Ray chunk tasks, of every other kind of process and of this one, sampled in a thread."""

    def __init__(self, marker: str = "ray::chunk:") -> None:
        self.marker = marker
        self.task_peak = 0
        self.peaks: dict[str, int] = {}
        self.idle_after: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for p in psutil.process_iter(["name", "cmdline", "memory_info"]):
                title = " ".join(p.info.get("cmdline") or []) or (p.info.get("name") or "")
                # A chunk task's process title is its task name (bridge.executor: "chunk:<operation>:<id>").
                rss = p.info["memory_info"].rss if p.info.get("memory_info") else 0
                if self.marker in title:
                    self.task_peak = max(self.task_peak, rss)
                for marker, kind in KINDS:
                    if marker in title:
                        self.peaks[kind] = max(self.peaks.get(kind, 0), rss)
                        break

    def workers_rss(self) -> list[int]:
        return [
            p.info["memory_info"].rss
            for p in psutil.process_iter(["cmdline", "memory_info"])
            if "ray::" in " ".join(p.info.get("cmdline") or [])
            and "IDLE" in " ".join(p.info.get("cmdline") or [])
        ]

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run(
    data: dict[str, Any],
    chunk_size: int,
    nodes: int,
    dashboard: Path | None = None,
    dashboard_interval: float = 5.0,
    verify: bool = False,
) -> dict[str, Any]:
    from sqlalchemy import func, select

    from cli.pipeline import Pipeline, Timings

    class _Marked(Timings):
        """The pipeline's phase timings, each phase's start marked on the dashboard too."""

        def __init__(self, scraper: Any) -> None:
            super().__init__()
            self.scraper = scraper

        @contextmanager
        def phase(self, name: str) -> Iterator[None]:
            self.scraper.mark(name)
            with super().phase(name):
                yield

    from compute.ballot import decode_submitted_ballot
    from service.db.migrate import upgrade
    from service.db.models import ChunkTask, ElectionJob
    from service.db.session import transaction
    from service.elections import ballots as ballot_service
    from service.elections import elections as election_service
    from service.elections.imports import import_election
    from service.elections.results import results
    from service.settings import Settings
    from tests.conftest import new_database, new_vhost
    from tests.raycluster import ray_cluster

    with new_database() as db_url, new_vhost() as amqp_url:
        env = {"AMARVOTE_SERVER_SECRET": SECRET, "AMARVOTE_DATABASE_URL": db_url}
        with ray_cluster(env, workers=nodes - 1, cpus=1, dashboard=True) as cluster:
            os.environ.update(cluster.client_env)
            settings = Settings(
                database_url=db_url,
                amqp_url=amqp_url,
                ray_address=cluster.address,
                server_secret=SECRET,
                max_in_flight=nodes,  # one chunk per CPU: a claimed task starts at once
                kdf_time_cost=1,
                kdf_memory_kib=1024,
                kdf_parallelism=1,
            )
            upgrade(db_url)
            pipe = Pipeline(settings, created_by="bench")
            pipe.connect()
            from benchmarks.dashboard import Scraper

            scraper = Scraper(cluster.metrics_ports, amqp_url.rsplit("/", 1)[1], interval=dashboard_interval)
            timings = _Marked(scraper)
            with transaction(pipe.factory) as s:
                e = import_election(
                    s,
                    name="bench",
                    manifest=data["manifest"],
                    context=data["context"],
                    guardian_records=data["records"],
                )
                eid = e.id
                credentials = {}
                for private in data["privates"][: GUARDIANS - MISSING]:
                    gid = private["guardian_id"]
                    credentials[gid] = (
                        election_service.seal_credential(e, gid, private, "bench passphrase"),
                        "bench passphrase",
                    )
            missing = [p["guardian_id"] for p in data["privates"][GUARDIANS - MISSING :]]
            with timings.phase("load ballots"):
                for payloads in payload_batches(data):
                    rows = [ballot_service.prepared(decode_submitted_ballot(p)) for p in payloads]
                    with transaction(pipe.factory) as s:
                        ballot_service.store(s, eid, rows)
                    del payloads, rows
                with transaction(pipe.factory) as s:
                    election_service.close_election(s, eid)
            verify_job: dict[str, Any] | None = None
            with PeakSampler() as sampler, scraper, pipe.running():
                pipe.run_jobs(eid, chunk_size, credentials, missing, timings)
                time.sleep(2)
                idle = sampler.workers_rss()
                if verify:
                    with PeakSampler() as checking, timings.phase("verify job (Ray)"):
                        verdict = pipe.verify(eid)
                    assert verdict["verified"], verdict
                    verify_job = {"verdict": verdict, "task_peak_rss_mib": checking.task_peak / 2**20}
            if dashboard is not None:
                dashboard.with_suffix(".json").write_text(json.dumps(scraper.dump()))
                try:
                    from benchmarks.dashboard import render

                    title = f"{data['ballots']} ballots, chunk size {chunk_size}, {nodes} node(s)"
                    render(scraper, dashboard, title)
                except ImportError:
                    print(
                        "matplotlib not installed: no dashboard (pip install -e '.[bench]')", file=sys.stderr
                    )
            import ray

            ray.shutdown()  # before the cluster stops: a driver whose GCS is gone terminates its process
            verified = None
            if verify:
                verified = _export_and_verify(pipe, eid, cluster, timings)
            with transaction(pipe.factory) as s:
                result = results(s, eid)
                jobs = []
                for j in s.scalars(select(ElectionJob).where(ElectionJob.election_id == eid)):
                    busy = s.scalar(
                        select(
                            func.sum(func.extract("epoch", ChunkTask.finished_at - ChunkTask.started_at))
                        ).where(ChunkTask.job_id == j.job_id)
                    )
                    wall = (j.completed_at - j.created_at).total_seconds()
                    jobs.append(
                        {
                            "operation": j.operation_type,
                            "messages": j.total_chunks,
                            "wall_s": wall,
                            "in_tasks_s": float(busy or 0),
                        }
                    )
    got = {
        f"{c['contest_id']}/{s['selection_id']}": s["votes"]
        for c in result["contests"]
        for s in c["selections"]
    }
    assert {k: v for k, v in got.items() if v} == data["expected"], "the counts differ from the plaintexts"
    by_op: dict[str, dict[str, float]] = {}
    for j in jobs:
        agg = by_op.setdefault(j["operation"], {"jobs": 0, "messages": 0, "wall_s": 0.0, "in_tasks_s": 0.0})
        agg["jobs"] += 1
        agg["messages"] += j["messages"]
        agg["wall_s"] = max(agg["wall_s"], j["wall_s"])  # jobs of one phase run side by side
        agg["in_tasks_s"] += j["in_tasks_s"]
    phases = timings.phases
    for op, phase in (("TALLY", "tally"), ("COMBINE_DECRYPTION", "combine"), ("VERIFY", "verify job (Ray)")):
        if op in by_op:
            by_op[op]["phase_s"] = phases[phase]
    dec = phases["decryption"]
    for op in ("PARTIAL_DECRYPTION", "COMPENSATED_DECRYPTION"):
        by_op[op]["phase_s"] = dec
    for agg in by_op.values():
        capacity = agg["phase_s"] * nodes
        agg["outside_share"] = max(0.0, 1 - agg["in_tasks_s"] / capacity) if capacity else 0.0
    return {
        "ballots": data["ballots"],
        "chunk_size": chunk_size,
        "nodes": nodes,
        "phases_s": phases,
        "jobs": by_op,
        "verify": verified,
        "verify_job": verify_job,
        "task_peak_rss_mib": sampler.task_peak / 2**20,
        "peak_rss_mib_by_process": {k: v / 2**20 for k, v in sampler.peaks.items()},
        "idle_worker_rss_mib": [r / 2**20 for r in idle],
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _export_and_verify(pipe: Any, eid: int, cluster: Any, timings: Any) -> dict[str, Any]:
    """Export the record (a file at a time) and run ``amarvote record verify`` on the cluster in a process
    of its own: its peak RSS (``/usr/bin/time``) and that of the Ray workers checking the chunks."""
    import subprocess
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="amarvote-bench-record-"))
    try:
        with timings.phase("export record"):
            record = pipe.export_record(eid, out)
        size = sum(f.stat().st_size for f in record.rglob("*") if f.is_file())
        env = {
            **os.environ,
            **cluster.client_env,
            "AMARVOTE_RAY_ADDRESS": cluster.address,
            "AMARVOTE_SERVER_SECRET": SECRET,
        }
        with PeakSampler(marker="ray::") as workers, timings.phase("verify record (Ray)"):
            done = subprocess.run(
                ["/usr/bin/time", "-v", sys.executable, "-m", "cli", "record", "verify", str(record)],
                env=env,
                capture_output=True,
                text=True,
            )
        if done.returncode != 0:
            raise RuntimeError(f"record verify failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        peak_kib = next(
            int(line.split(":")[1])
            for line in done.stderr.splitlines()
            if "Maximum resident set size" in line
        )
        return {
            "record_mib": size / 2**20,
            "verify_peak_rss_mib": peak_kib / 1024,
            "verify_worker_peak_rss_mib": workers.task_peak / 2**20,
            "verify_said": [line for line in done.stdout.splitlines() if "OK" in line][-1:],
        }
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


# -------------------------------------------------------------------------------------------- reports


def run_apart(
    ballots: int, chunk_size: int, nodes: int, dashboard: Path | None = None, verify: bool = False
) -> dict[str, Any]:
    """One run in a process of its own: a Ray driver is tied to one cluster (and its auth token) for life."""
    import subprocess

    extra = (["--dashboard", str(dashboard)] if dashboard else []) + (["--verify"] if verify else [])
    out = subprocess.run(
        [sys.executable, __file__, "one", str(ballots), str(chunk_size), str(nodes), *extra],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def chunk_sizes(args: argparse.Namespace) -> None:
    election(args.ballots)  # made (and cached) once, before the runs
    runs = []
    for nodes in args.nodes:
        for size in args.sizes:
            print(f"chunk size {size}, {nodes} node(s)", file=sys.stderr)
            runs.append(run_apart(args.ballots, size, nodes))
            print(json.dumps(runs[-1]), file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_chunk_size.json").write_text(json.dumps(runs, indent=1))
    lines = [
        f"{args.ballots} ballots, {GUARDIANS} guardians (quorum {QUORUM}, {MISSING} missing), 1% spoiled;"
        " per run: phase wall times (s), tally messages, share of tally capacity outside the tasks, chunk"
        " task peak RSS.",
        "",
        "| nodes | chunk size | tally msgs | tally s | outside tasks | decryption s | combine s"
        " | task peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        t = r["jobs"]["TALLY"]
        lines.append(
            f"| {r['nodes']} | {r['chunk_size']} | {t['messages']} | {r['phases_s']['tally']:.1f} |"
            f" {t['outside_share']:.0%} | {r['phases_s']['decryption']:.1f} |"
            f" {r['phases_s']['combine']:.1f} |"
            f" {r['task_peak_rss_mib']:.0f} |"
        )
    (RESULTS / "bench_chunk_size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    publish(RESULTS / "bench_chunk_size.md")
    plot_chunk_sizes(runs)


def plot_chunk_sizes(runs: list[dict[str, Any]]) -> None:
    """results/bench_chunk_size.png: tally time and chunk task peak RSS per chunk size, a line per node
    count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
        return
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    sizes = sorted({r["chunk_size"] for r in runs})
    for nodes in sorted({r["nodes"] for r in runs}):
        rs = [r for r in runs if r["nodes"] == nodes]
        xs = [r["chunk_size"] for r in rs]
        ax[0].plot(xs, [r["phases_s"]["tally"] for r in rs], marker="o", label=f"{nodes} node(s)")
        ax[1].plot(xs, [r["task_peak_rss_mib"] for r in rs], marker="o", label=f"{nodes} node(s)")
    for a, title in zip(ax, ("tally wall time (s)", "chunk task peak RSS (MiB)"), strict=True):
        a.set_xscale("log")
        a.set_xticks(sizes, [f"{x:,}" for x in sizes])
        a.minorticks_off()
        a.set_ylim(bottom=0)
        a.set_xlabel("chunk size (ballots)")
        a.set_title(title)
        a.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_chunk_size.png", dpi=110)


def large(args: argparse.Namespace) -> None:
    data = election(args.ballots)
    name = args.name
    r = run_apart(
        args.ballots,
        args.chunk_size,
        args.nodes,
        dashboard=RESULTS / f"{name}_dashboard.png",
        verify=True,
    )
    r["encrypt_s"] = data["encrypt_s"]
    n = args.ballots
    reference = {
        "encrypt_s": n / REFERENCE["encrypt_ballots_per_s"],
        "tally_s": n / REFERENCE["tally_ballots_per_s"],
        "decrypt_s": REFERENCE["decrypt_tally_s"],
    }
    r["reference_estimate_s"] = reference
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(r, indent=1))
    cores = args.nodes
    cpus = os.cpu_count() or 1
    lines = [
        f"{n} ballots, chunk size {args.chunk_size}, {args.nodes} Ray node(s) of 1 CPU:",
        "",
        "| phase | seconds | ballots/s per core |",
        "|---|---:|---:|",
        f"| encrypt (set-up, {cpus} processes) | {data['encrypt_s']:.0f}"
        f" | {n / data['encrypt_s'] / cpus:.1f} |",
    ]
    for phase, sec in r["phases_s"].items():
        per_core = f"{n / sec / cores:.1f}" if phase in ("load ballots", "tally") else ""
        lines.append(f"| {phase} | {sec:.0f} | {per_core} |")
    lines += [
        "",
        f"Peak RSS: chunk task {r['task_peak_rss_mib']:.0f} MiB, driver (relay, executor, pipeline)"
        f" {r['driver_peak_rss_mib']:.0f} MiB; idle workers after the run"
        f" {', '.join(f'{x:.0f}' for x in r['idle_worker_rss_mib'])} MiB.",
        "Peak RSS by process (MiB): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.get("peak_rss_mib_by_process", {}).items()))
        + ".",
        *(
            [
                "The verify job (`POST /api/verify/create`: the same checks from the database, one task per"
                f" tally chunk): chunk task peak RSS {r['verify_job']['task_peak_rss_mib']:.0f} MiB."
            ]
            if r.get("verify_job")
            else []
        ),
        *(
            [
                f"Record: {r['verify']['record_mib']:.0f} MiB on disk; `amarvote record verify` on the"
                f" cluster: peak RSS {r['verify']['verify_peak_rss_mib']:.0f} MiB (driver),"
                f" {r['verify']['verify_worker_peak_rss_mib']:.0f} MiB (largest Ray worker)."
            ]
            if r.get("verify")
            else []
        ),
        f"The reference package, from its measured per-ballot costs on this machine: encryption"
        f" {reference['encrypt_s'] / 3600:.1f} h, tally {reference['tally_s'] / 3600:.1f} h (one core).",
    ]
    lines += ["", f"![the dashboard's panels during the run]({name}_dashboard.png)"]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    publish(RESULTS / f"{name}.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("chunk-sizes")
    c.add_argument("--ballots", type=int, default=20_000)
    c.add_argument("--sizes", default="250,500,1000,2500,5000,10000")
    c.add_argument("--nodes", default="1,2")
    c.add_argument("--quick", action="store_true", help="400 ballots, chunk sizes 50 and 200, 1 node")
    g = sub.add_parser("large")
    g.add_argument("--ballots", type=int, default=100_000)
    g.add_argument("--chunk-size", type=int, default=2500)
    g.add_argument("--nodes", type=int, default=2)
    g.add_argument("--name", default="bench_large", help="results/NAME.{md,json} and its README section")
    one = sub.add_parser("one")  # internal: one run, its JSON on stdout
    one.add_argument("ballots", type=int)
    one.add_argument("chunk_size", type=int)
    one.add_argument("nodes", type=int)
    one.add_argument("--dashboard", type=Path, default=None)
    one.add_argument("--verify", action="store_true")
    args = ap.parse_args()
    if args.what == "one":
        try:
            print(
                json.dumps(
                    run(
                        election(args.ballots),
                        args.chunk_size,
                        args.nodes,
                        args.dashboard,
                        verify=args.verify,
                    )
                )
            )
        except BaseException:
            # Said now: at exit a Ray driver whose cluster is gone waits a minute for its GCS, then aborts.
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
    elif args.what == "chunk-sizes":
        if args.quick:
            args.ballots, args.sizes, args.nodes = 400, "50,200", "1"
        args.sizes = [int(x) for x in args.sizes.split(",")]
        args.nodes = [int(x) for x in args.nodes.split(",")]
        chunk_sizes(args)
    else:
        large(args)


if __name__ == "__main__":
    main()
