"""The API under load while a tally runs: 50 concurrent clients creating jobs and polling their status.

The API is a real ``uvicorn service.api.app:app`` process on PostgreSQL; the tally runs through the
production path (outbox → relay → RabbitMQ → executor → local Ray → PostgreSQL, as in
``bench_tally_job.py``). Three phases, one run:

- **tally alone**: the chunk throughput (chunks/s) of a tally job with no API traffic;
- **load alone**: C async httpx clients (one connection each) for as long as the tally took: each takes
  a closed election from a pool, creates its tally job (``POST /api/tally/create``), then polls
  ``GET /api/jobs/{id}/status`` P times; when the pool is empty it only polls;
- **tally + load**: the same tally again with the same load running until it completes.

Each load job is a real one-ballot tally (the election is a copy of the benchmark election with one of
its ballots), so the executor runs those chunks as well: the tally competes with them, as it would in
production. Figures: requests/s, p50/p99 latency per kind, errors (non-2xx or transport errors), and the
tally's chunks/s with and without the load.

    python benchmarks/bench_api_load.py [--quick] [--clients 50] [--ballots 400] [--chunk-size 10]
                                        [--polls 4] [--workers 1]

Writes benchmarks/results/bench_api_load.{md,json}. Needs PostgreSQL and RabbitMQ (as the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import create_engine, text

from benchmarks.bench_tally_job import drop_database, make_database, make_election, make_vhost

RESULTS = Path(__file__).resolve().parent / "results"
JWT_SECRET = "bench-jwt-secret-0123456789abcdef-xyz"
SERVER_SECRET = "bench-server-secret-0123456789abcdef"


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ------------------------------------------------------------------------------------------ setup
def load_elections(url: str, source_id: int, n: int) -> list[int]:
    """``n`` closed elections, each a copy of the benchmark election (manifest, context, guardians)
    with one of its real ballots: a tally job of one cheap, real chunk."""
    engine = create_engine(url)
    with engine.begin() as c:
        ids = list(
            c.execute(
                text(
                    "INSERT INTO election (name, state, manifest, manifest_hash, manifest_version,"
                    " number_of_guardians, quorum, context)"
                    " SELECT 'load-' || k, 'closed', manifest, manifest_hash, manifest_version,"
                    " number_of_guardians, quorum, context"
                    " FROM election, generate_series(1, :n) AS k WHERE id = :src RETURNING id"
                ),
                {"n": n, "src": source_id},
            ).scalars()
        )
        c.execute(
            text(
                "INSERT INTO guardian (election_id, guardian_id, sequence_order, public_record)"
                " SELECT e.id, g.guardian_id, g.sequence_order, g.public_record"
                " FROM guardian g, election e WHERE g.election_id = :src AND e.id = ANY(:ids)"
            ),
            {"src": source_id, "ids": ids},
        )
        c.execute(
            text(
                "INSERT INTO ballot (election_id, object_id, state, code, payload)"
                " SELECT e.id, b.object_id, b.state, b.code, b.payload FROM election e,"
                " (SELECT * FROM ballot WHERE election_id = :src ORDER BY seq LIMIT 1) b"
                " WHERE e.id = ANY(:ids)"
            ),
            {"src": source_id, "ids": ids},
        )
    engine.dispose()
    return ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(url: str, port: int, data_dir: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AMARVOTE_DATABASE_URL": url,
        "AMARVOTE_JWT_SECRET": JWT_SECRET,
        "AMARVOTE_SERVER_SECRET": SERVER_SECRET,
        "AMARVOTE_DATA_DIR": data_dir,
        "AMARVOTE_AUTO_MIGRATE": "false",
        "AMARVOTE_JOB_RATE_LIMIT_PER_MINUTE": "100000000",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "service.api.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the API did not answer /health within 60 s")


# ------------------------------------------------------------------------------------------ the tally
class Pipeline:
    """Relay, reconciler and executor over RabbitMQ with a local Ray (bench_tally_job's set-up), kept
    running across the phases."""

    def __init__(self, url: str, amqp_url: str, workers: int) -> None:
        import ray

        from bridge.brokers.rabbitmq import RabbitMQBroker, RabbitMQPublisher
        from bridge.executor import Executor
        from bridge.reconciler import Reconciler
        from bridge.relay import Relay
        from service.db.session import session_factory
        from service.settings import Settings

        settings = Settings(
            database_url=url,
            amqp_url=amqp_url,
            max_in_flight=workers,
            task_memory_mb=256,
            server_secret=SERVER_SECRET,
            jwt_secret=JWT_SECRET,
        )
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ray.get([ray.remote(lambda: __import__("bridge.tasks.tally")).remote() for _ in range(workers)])
        self.factory = session_factory(url)
        self.parts = [
            Relay(self.factory, RabbitMQPublisher(amqp_url), poll_interval=0.05),
            Reconciler(self.factory, interval=30, stale_after=timedelta(seconds=600)),
            Executor(self.factory, RabbitMQBroker(amqp_url), settings),
        ]
        self.threads = [threading.Thread(target=p.run, daemon=True) for p in self.parts]
        for t in self.threads:
            t.start()
        assert self.parts[2].ready.wait(60)  # type: ignore[attr-defined]

    def tally(self, election_id: int, chunk_size: int) -> dict[str, float]:
        from service.db.models import ElectionJob
        from service.jobs import planning

        t0 = time.perf_counter()
        with self.factory.begin() as s:
            job_id = planning.create_tally_job(s, election_id, chunk_size).job_id
        while True:
            with self.factory() as s:
                job = s.get(ElectionJob, job_id)
                assert job is not None
                if job.status in ("COMPLETED", "FAILED"):
                    break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        assert job.status == "COMPLETED", job.error_message
        with self.factory() as s:
            finished = s.execute(text("SELECT now()")).scalar()
        return {
            "wall_s": wall,
            "chunks": job.total_chunks,
            "chunks_per_s": job.total_chunks / wall,
            "finished_at": finished,
        }

    def drain(self, elections: list[int], timeout: float = 600) -> None:
        """Wait until every job of these elections has ended (the load's jobs, between phases)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.factory() as s:
                left = s.execute(
                    text(
                        "SELECT count(*) FROM election_job WHERE election_id = ANY(:ids)"
                        " AND status NOT IN ('COMPLETED', 'FAILED')"
                    ),
                    {"ids": elections},
                ).scalar()
            if not left:
                return
            time.sleep(0.2)
        raise SystemExit(f"the load's jobs did not finish within {timeout} s")

    def job_states(self, elections: list[int]) -> dict[str, int]:
        with self.factory() as s:
            rows = s.execute(
                text(
                    "SELECT status, count(*) FROM election_job WHERE election_id = ANY(:ids) GROUP BY status"
                ),
                {"ids": elections},
            ).all()
        return {str(status): int(n) for status, n in rows}

    def done_chunks(self, elections: list[int], *, before: Any) -> int:
        """Chunks of these elections' jobs finished by ``before`` (database time)."""
        with self.factory() as s:
            return int(
                s.execute(
                    text(
                        "SELECT count(*) FROM chunk_task t JOIN election_job j ON j.job_id = t.job_id"
                        " WHERE j.election_id = ANY(:ids) AND t.state = 'DONE' AND t.finished_at <= :before"
                    ),
                    {"ids": elections, "before": before},
                ).scalar()
            )

    def stop(self) -> None:
        import ray

        for p in self.parts:
            p.stop()  # type: ignore[attr-defined]
        for t in self.threads:
            t.join(timeout=60)
        ray.shutdown()


# ------------------------------------------------------------------------------------------ the load
@dataclass
class Load:
    base: str
    token: str
    clients: int
    polls: int
    pool: list[int]
    samples: dict[str, list[float]] = field(default_factory=lambda: {"create": [], "status": []})
    errors: dict[str, int] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def _client(self, stop: asyncio.Event, rng: random.Random) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(
            base_url=self.base, headers=headers, timeout=60, limits=httpx.Limits(max_connections=1)
        ) as client:
            while not stop.is_set():
                job_id: str | None = None
                if self.pool:
                    eid = self.pool.pop()
                    t = time.perf_counter()
                    try:
                        r = await client.post("/api/tally/create", json={"election_id": eid})
                    except httpx.HTTPError as exc:
                        self._error(f"create: {type(exc).__name__}")
                        continue
                    self.samples["create"].append(time.perf_counter() - t)
                    if r.status_code != 200:
                        self._error(f"create: HTTP {r.status_code}")
                        continue
                    job_id = r.json()["jobId"]
                    self.jobs.append(job_id)
                elif self.jobs:
                    job_id = rng.choice(self.jobs)
                else:
                    await asyncio.sleep(0.05)
                    continue
                for _ in range(self.polls):
                    if stop.is_set():
                        break
                    t = time.perf_counter()
                    try:
                        r = await client.get(f"/api/jobs/{job_id}/status")
                    except httpx.HTTPError as exc:
                        self._error(f"status: {type(exc).__name__}")
                        continue
                    self.samples["status"].append(time.perf_counter() - t)
                    if r.status_code != 200:
                        self._error(f"status: HTTP {r.status_code}")

    async def run_until(self, done: Callable[[], bool], seed: int = 1) -> dict[str, Any]:
        stop = asyncio.Event()
        t0 = time.perf_counter()
        tasks = [
            asyncio.create_task(self._client(stop, random.Random(seed + i))) for i in range(self.clients)
        ]
        while not done():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*tasks)
        return self.figures(time.perf_counter() - t0)

    def figures(self, seconds: float) -> dict[str, Any]:
        every = self.samples["create"] + self.samples["status"]
        out: dict[str, Any] = {
            "seconds": seconds,
            "requests": len(every),
            "requests_per_s": len(every) / seconds,
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "jobs_created": len(self.samples["create"]),
        }
        for kind, xs in (("all", every), *self.samples.items()):
            out[f"{kind}_p50_ms"] = 1000 * percentile(xs, 50)
            out[f"{kind}_p99_ms"] = 1000 * percentile(xs, 99)
            out[f"{kind}_n"] = len(xs)
        return out


async def warm_up(base: str, bearer: str, clients: int, election_id: int) -> None:
    """Open every client's connection and the API's database pool before anything is measured."""

    async def one() -> None:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {bearer}"}) as c:
            for _ in range(5):
                (await c.get(f"/api/elections/{election_id}")).raise_for_status()

    await asyncio.gather(*(one() for _ in range(clients)))


def token() -> str:
    from service.security.auth import Role, issue_token
    from service.settings import Settings

    settings = Settings(jwt_secret=JWT_SECRET, database_url="postgresql://unused/x")
    return issue_token(settings, "bench-admin", Role.ADMIN)


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short run: 200 ballots in chunks of 10")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--ballots", type=int, default=400)
    ap.add_argument("--chunk-size", type=int, default=10)
    ap.add_argument("--polls", type=int, default=4, help="status polls after each job created")
    ap.add_argument("--workers", type=int, default=1, help="Ray workers (CPUs) for the tally")
    ap.add_argument("--pool", type=int, default=0, help="elections for the load to tally (default: derived)")
    args = ap.parse_args()
    if args.quick:
        args.ballots, args.chunk_size = 200, 10
    import logging

    logging.basicConfig(level=logging.WARNING)
    from service.db import migrate

    db_name, url = make_database()
    vhost: str | None = None
    api: subprocess.Popen[bytes] | None = None
    pipeline: Pipeline | None = None
    try:
        vhost, amqp_url = make_vhost()
        migrate.upgrade(url)
        election_id = make_election(url, args.ballots)
        # Bounded, so that the load's own chunks do not pile up into a backlog that the tally would wait
        # behind: then the clients only poll.
        pool_size = args.pool or 2 * args.clients
        pools = [load_elections(url, election_id, pool_size) for _ in range(2)]
        port = free_port()
        api = start_api(url, port, tempfile.mkdtemp(prefix="amarvote-bench-api-"))
        pipeline = Pipeline(url, amqp_url, args.workers)
        bearer = token()
        base = f"http://127.0.0.1:{port}"

        asyncio.run(warm_up(base, bearer, args.clients, election_id))
        alone = pipeline.tally(election_id, args.chunk_size)
        print(
            f"tally alone: {alone['chunks']} chunks in {alone['wall_s']:.2f} s"
            f" ({alone['chunks_per_s']:.2f}/s)"
        )

        deadline = time.perf_counter() + max(alone["wall_s"], 10.0)
        load_alone = asyncio.run(
            Load(base, bearer, args.clients, args.polls, list(pools[0])).run_until(
                lambda: time.perf_counter() > deadline
            )
        )
        print(
            f"load alone: {load_alone['requests_per_s']:.0f} req/s, p50 {load_alone['all_p50_ms']:.1f} ms,"
            f" p99 {load_alone['all_p99_ms']:.1f} ms, {load_alone['errors']} errors"
        )

        pipeline.drain(pools[0])
        reset_tally_only(url, election_id)
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.update(pipeline.tally(election_id, args.chunk_size)))  # type: ignore[union-attr]
        worker.start()
        under = asyncio.run(
            Load(base, bearer, args.clients, args.polls, list(pools[1])).run_until(
                lambda: not worker.is_alive()
            )
        )
        worker.join()
        result["load_chunks_during"] = pipeline.done_chunks(pools[1], before=result["finished_at"])
        pipeline.drain(pools[1])
        load_alone["load_jobs_end_states"] = pipeline.job_states(pools[0])
        under["load_jobs_end_states"] = pipeline.job_states(pools[1])
        print("load jobs' end states:", load_alone["load_jobs_end_states"], under["load_jobs_end_states"])
        result["executor_chunks_per_s"] = (result["chunks"] + result["load_chunks_during"]) / result["wall_s"]
        print(
            f"tally under load: {result['chunks']} chunks in {result['wall_s']:.2f} s"
            f" ({result['chunks_per_s']:.2f}/s); load {under['requests_per_s']:.0f} req/s,"
            f" p50 {under['all_p50_ms']:.1f} ms, p99 {under['all_p99_ms']:.1f} ms, {under['errors']} errors"
        )
    finally:
        if pipeline is not None:
            pipeline.stop()
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        drop_database(db_name)
        if vhost is not None:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
    write_results(args, alone, load_alone, result, under)


def reset_tally_only(url: str, election_id: int) -> None:
    """Forget the benchmark election's tally (its rows only: the load jobs' rows stay), so it is
    tallied again."""
    engine = create_engine(url)
    with engine.begin() as c:
        jobs = "SELECT job_id FROM election_job WHERE election_id = :e"
        c.execute(text(f"DELETE FROM outbox WHERE job_id IN ({jobs})"), {"e": election_id})
        c.execute(text(f"DELETE FROM chunk_task WHERE job_id IN ({jobs})"), {"e": election_id})
        c.execute(text("DELETE FROM election_center WHERE election_id = :e"), {"e": election_id})
        c.execute(text("DELETE FROM election_job WHERE election_id = :e"), {"e": election_id})
        c.execute(
            text("UPDATE election SET state='closed', encrypted_tally=NULL WHERE id = :e"), {"e": election_id}
        )
    engine.dispose()


def write_results(args, alone, load_alone, under_tally, under_load) -> None:  # type: ignore[no-untyped-def]
    RESULTS.mkdir(exist_ok=True)
    under_tally = {k: v for k, v in under_tally.items() if k != "finished_at"}
    alone = {k: v for k, v in alone.items() if k != "finished_at"}
    doc = {
        "clients": args.clients,
        "ballots": args.ballots,
        "chunk_size": args.chunk_size,
        "polls_per_job": args.polls,
        "ray_workers": args.workers,
        "cpus": os.cpu_count(),
        "tally_alone": alone,
        "load_alone": load_alone,
        "tally_under_load": under_tally,
        "load_during_tally": under_load,
    }
    (RESULTS / "bench_api_load.json").write_text(json.dumps(doc, indent=2))

    def row(name: str, f: dict[str, Any]) -> str:
        return (
            f"| {name} | {f['seconds']:.1f} | {f['requests']} | {f['requests_per_s']:.0f} |"
            f" {f['all_p50_ms']:.1f} | {f['all_p99_ms']:.1f} |"
            f" {f['create_p50_ms']:.1f} / {f['create_p99_ms']:.1f} |"
            f" {f['status_p50_ms']:.1f} / {f['status_p99_ms']:.1f} | {f['jobs_created']} | {f['errors']} |"
        )

    slowdown = alone["chunks_per_s"] / under_tally["chunks_per_s"]
    lines = [
        f"# API under load while a tally runs ({args.clients} clients, {os.cpu_count()} CPUs)",
        "",
        f"Tally: {args.ballots} ballots in chunks of {args.chunk_size}, {args.workers} Ray worker(s), over"
        " RabbitMQ; the API: one uvicorn process on PostgreSQL. Each client creates a tally job of a"
        f" one-ballot election, then polls its status {args.polls} times (only polls once the pool of"
        " elections is used up).",
        "",
        "| phase | seconds | requests | requests/s | p50 (ms) | p99 (ms) | create p50 / p99 (ms) |"
        " status p50 / p99 (ms) | jobs created | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("load alone", load_alone),
        row("load during the tally", under_load),
        "",
        "| tally | chunks | wall (s) | tally chunks/s | load chunks run meanwhile | all chunks/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| alone | {alone['chunks']} | {alone['wall_s']:.2f} | {alone['chunks_per_s']:.2f} | 0 |"
        f" {alone['chunks_per_s']:.2f} |",
        f"| under the load | {under_tally['chunks']} | {under_tally['wall_s']:.2f} |"
        f" {under_tally['chunks_per_s']:.2f} | {under_tally['load_chunks_during']} |"
        f" {under_tally['executor_chunks_per_s']:.2f} |",
        "",
        f"The tally's chunk throughput under the load is {1 / slowdown:.2f}x its throughput alone; the load's"
        " own jobs (one chunk each) run on the same executor and Ray worker, and API, clients, relay and"
        " executor share the machine's CPUs with the Ray worker.",
    ]
    (RESULTS / "bench_api_load.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "bench_api_load.md").read_text())


if __name__ == "__main__":
    main()
