"""Latency of POST /api/tally/create for a 100,000-ballot election in PostgreSQL.

Job creation must answer in well under a second because it only writes rows: it plans the chunks
from ballot sequence numbers with one SQL window query and never reads a ballot payload. So the
ballots here are inserted directly with SQL and carry a 1-byte dummy payload.

Each sample creates the tally job through the API (in-process FastAPI TestClient: app + database,
no network), then the job's rows are deleted (not timed) so the next sample plans the same election
again. Prints a table and writes benchmarks/results/job_creation.{md,png}.

    python benchmarks/bench_job_creation.py [--ballots 100000] [--samples 50] [--chunk-sizes 5000,1000,100]

The database: a fresh one created next to ``AMARVOTE_TEST_PG`` (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient

from service.api.app import create_app
from service.db import migrate
from service.security.auth import Role, issue_token
from service.settings import Settings

ADMIN_URL = os.environ.get("AMARVOTE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
RESULTS = Path(__file__).resolve().parent / "results"


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def setup_election(url: str, ballots: int) -> int:
    engine = create_engine(url)
    with engine.begin() as c:
        eid = c.execute(
            text(
                "INSERT INTO election (name, state, manifest, manifest_version, number_of_guardians, quorum)"
                " VALUES ('bench', 'closed', '{}', 1, 5, 3) RETURNING id"
            )
        ).scalar_one()
        c.execute(
            text(
                "INSERT INTO ballot (election_id, object_id, state, code, payload)"
                " SELECT :e, 'ballot-' || i, CASE WHEN i % 50 = 0 THEN 2 ELSE 1 END,"
                " md5(i::text), '\\x00'::bytea"
                " FROM generate_series(1, :n) AS i"
            ),
            {"e": eid, "n": ballots},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text("VACUUM ANALYZE ballot"))
    engine.dispose()
    return int(eid)


def reset(url_engine, election_id: int) -> None:  # type: ignore[no-untyped-def]
    with url_engine.begin() as c:
        jobs = "SELECT job_id FROM election_job WHERE election_id = :e"
        c.execute(text(f"DELETE FROM outbox WHERE (body->>'job_id')::uuid IN ({jobs})"), {"e": election_id})
        c.execute(text(f"DELETE FROM chunk_task WHERE job_id IN ({jobs})"), {"e": election_id})
        c.execute(text("DELETE FROM election_center WHERE election_id = :e"), {"e": election_id})
        c.execute(text("DELETE FROM election_job WHERE election_id = :e"), {"e": election_id})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ballots", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--chunk-sizes", default="5000,1000,100")
    args = ap.parse_args()
    sizes = [int(x) for x in args.chunk_sizes.split(",")]

    name = f"amarvote_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    rows = []
    try:
        migrate.upgrade(url)
        t0 = time.perf_counter()
        eid = setup_election(url, args.ballots)
        print(f"inserted {args.ballots:,} ballots in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        settings = Settings(
            database_url=url,
            data_dir=Path(tempfile.mkdtemp()),
            server_secret="bench-server-secret-0123456789abcdef",
            jwt_secret="bench-jwt-secret-0123456789abcdefgh",
            job_rate_limit_per_minute=0,  # 0 = no limit: measure the work, not the limiter
            auto_migrate=False,
        )
        headers = {"Authorization": f"Bearer {issue_token(settings, 'bench', Role.ADMIN)}"}
        engine = create_engine(url)
        with TestClient(create_app(settings)) as client:
            for size in sizes:
                times, chunks = [], 0
                for i in range(args.samples + 3):
                    reset(engine, eid)
                    start = time.perf_counter()
                    r = client.post(
                        "/api/tally/create", json={"election_id": eid, "chunk_size": size}, headers=headers
                    )
                    elapsed = time.perf_counter() - start
                    assert r.status_code == 200, r.text
                    chunks = r.json()["totalChunks"]
                    if i >= 3:  # the first few warm the connection pool and the plan cache
                        times.append(elapsed * 1000)
                rows.append(
                    {
                        "chunk_size": size,
                        "chunks": chunks,
                        "p50": statistics.median(times),
                        "p90": percentile(times, 90),
                        "p99": percentile(times, 99),
                        "max": max(times),
                        "times": times,
                    }
                )
        engine.dispose()
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    header = (
        f"POST /api/tally/create, {args.ballots:,} ballots, PostgreSQL, {args.samples} samples each (ms)\n\n"
        "| chunk size | chunks | p50 | p90 | p99 | max |\n|---:|---:|---:|---:|---:|---:|\n"
    )
    table = header + "".join(
        f"| {r['chunk_size']:,} | {r['chunks']:,} | {r['p50']:.1f} | {r['p90']:.1f}"
        f" | {r['p99']:.1f} | {r['max']:.1f} |\n"
        for r in rows
    )
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "job_creation.md").write_text(table)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.boxplot(
            [r["times"] for r in rows],
            tick_labels=[f"{r['chunk_size']:,}\n({r['chunks']:,} chunks)" for r in rows],
        )
        ax.set_xlabel("chunk size")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"Tally job creation, {args.ballots:,} ballots")
        fig.tight_layout()
        fig.savefig(RESULTS / "job_creation.png", dpi=120)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
