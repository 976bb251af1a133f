"""Chaos harness: whole small elections under one injected fault each, checked chunk by chunk.

    python scripts/chaos.py [--runs 20] [--budget 900] [--seed N] [--faults a,b] [--global-faults]
    python scripts/chaos.py --quick          # CI: 3 runs, 4 ballots, faults local to the harness

Each harness run makes a fresh PostgreSQL database and RabbitMQ vhost (as ``tests/conftest.py`` does), a Ray
cluster of two nodes started with ``ray start`` on 127.0.0.1 (``tests/raycluster.py``: token authentication,
a token, a working directory and a Ray ``--temp-dir`` of its own), and runs the service's processes as
subprocesses: ``amarvote serve`` (the API), ``amarvote bridge --no-relay --no-reconcile`` (the executor),
``amarvote relay`` and ``amarvote reconcile``. Then K elections, each driven through the HTTP API as a
client would (create, key ceremony, ballots encrypted by the service, close, tally, decryption by the
available guardians with one missing, combine, results), with one fault injected at a random moment (a
random phase, once a random share of that phase's chunks is done):

- ``kill_bridge``, ``kill_api``: kill -9 of that process, restarted a second later;
- ``kill_worker``: kill -9 of a Ray worker process running a chunk of this cluster;
- ``pg_terminate``: ``pg_terminate_backend`` of every session of the harness's own database;
- ``amqp_close``: ``rabbitmqctl close_connection`` of every connection of the harness's own vhost;
- ``duplicate_publish``: a message already sent, published again with pika;
- ``poison``: a malformed body on a work queue;
- ``bad_chunk``: a ballot with a broken proof written straight into the database before the close (the
  API refuses it; nothing in production can store it), so its chunk fails every attempt;
- with ``--global-faults`` also ``rabbit_restart`` (``rabbitmqctl stop_app``/``start_app``) and
  ``pg_restart`` (``pg_ctlcluster VERSION NAME restart``): these disturb everything else on the machine.

Every accepted chunk (``chunk_task`` row) is then checked against PostgreSQL, as Jepsen's RabbitMQ checker
checks every acknowledged message: ok (DONE with exactly one result), lost (not DONE, or DONE without its
result row), duplicated (counted twice: a job's counters above its DONE tasks, a ballot in two chunks, more
cast ballots tallied than cast); the counts equal the plaintexts the harness generated; no job is stuck
(every job COMPLETED or FAILED within the wait); the dead-letter queues hold only the poison (and, for
``bad_chunk``, that chunk's message). Prints a table, writes ``benchmarks/results/chaos.{json,md}`` (or
``--out``), and exits 1 on any loss, duplicate, stuck job, wrong count or unexpected dead letter.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

AMARVOTE = str(Path(sys.executable).parent / "amarvote")
RESULTS = ROOT / "benchmarks" / "results"
CANDIDATES = ["Ann", "Ben", "Cy"]
PHASES = ("tally", "decryption", "combine")
PHASE_OPERATIONS = {
    "tally": ("TALLY",),
    "decryption": ("PARTIAL_DECRYPTION", "COMPENSATED_DECRYPTION"),
    "combine": ("COMBINE_DECRYPTION",),
}
LOCAL_FAULTS = (
    "kill_bridge",
    "kill_worker",
    "kill_api",
    "pg_terminate",
    "amqp_close",
    "duplicate_publish",
    "poison",
    "bad_chunk",
)
GLOBAL_FAULTS = ("rabbit_restart", "pg_restart")
POISON = b'{"chaos": "poison", "not": "a chunk message"'  # not even JSON
HARNESS_APP = "amarvote-chaos-harness"
MAX_ATTEMPTS = 3
LEASE_SECONDS = 10


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ processes


class Stack:
    """The service's processes, each a subprocess in a session of its own (so kill -9 hits only it)."""

    COMMANDS: ClassVar[dict[str, Callable[[int], list[str]]]] = {
        "api": lambda port: ["serve", "--port", str(port)],
        "bridge": lambda _: ["bridge", "--no-relay", "--no-reconcile"],
        "relay": lambda _: ["relay"],
        "reconcile": lambda _: ["reconcile", "--interval", "2"],
    }

    def __init__(self, env: dict[str, str], logs: Path, port: int) -> None:
        self.env, self.logs, self.port = env, logs, port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: Counter[str] = Counter()

    def start(self, name: str) -> None:
        out = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [AMARVOTE, *self.COMMANDS[name](self.port)],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.logs,
        )
        out.close()

    def kill9(self, name: str) -> int:
        p = self.procs[name]
        pid = p.pid
        kids = _descendants(pid)
        os.kill(pid, signal.SIGKILL)
        p.wait(timeout=30)
        for k in kids:  # what the dead process had started (none should outlive it)
            try:
                k.kill()
            except psutil.Error:
                pass
        return pid

    def restart(self, name: str) -> None:
        self.restarts[name] += 1
        self.start(name)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database, as ``tests/conftest.py`` ``new_database`` makes one, but dropped over a
    new connection (with retries): a PostgreSQL restart during the runs breaks any connection made
    before it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from tests.conftest import PG_ADMIN_URL

    name = f"amarvote_chaos_{uuid.uuid4().hex[:10]}"

    def admin(sql: str) -> None:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as c:
                c.execute(text(sql))
        finally:
            engine.dispose()

    admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        for attempt in range(10):
            try:
                admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except Exception as exc:  # the server may still be coming back from a restart fault
                log(f"dropping {name}: {type(exc).__name__}; retrying")
                time.sleep(1 + attempt)


def free_port() -> int:
    from tests.raycluster import free_port as fp

    return fp()


# ------------------------------------------------------------------------------------------ the client


class Api:
    """HTTP client that rides out a dead API, a database outage (503) and restarts: every call retries
    until it gets an answer the service meant, or the deadline passes."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=30)
        self.server_errors = 0  # 500s seen (a bug: bad input or an outage must never give one)
        self.server_error_log: list[str] = []
        self.retries = 0

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201),
        deadline: float = 120.0,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        end = time.monotonic() + deadline
        while True:
            try:
                r = self.client.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
                if r.status_code in ok or r.status_code in accept:
                    return r
                if r.status_code >= 500:
                    if r.status_code == 500:
                        self.server_errors += 1
                        self.server_error_log.append(f"{method} {path}: {r.text[:160]}")
                elif r.status_code != 429:
                    raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            except httpx.TransportError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{method} {path}: no answer within {deadline:.0f} s")
            self.retries += 1
            time.sleep(0.5)

    def json(self, *args: Any, **kw: Any) -> Any:
        return self.call(*args, **kw).json()


# ------------------------------------------------------------------------------------------ one run


class Timeline:
    """Phases of one election as the driver passes them, shared with the injector's thread."""

    def __init__(self, fault_phase: str) -> None:
        self.fault_phase = fault_phase
        self.began = {p: threading.Event() for p in PHASES}
        self.settled = {p: threading.Event() for p in PHASES}
        self.injected = threading.Event()
        self.aborted = threading.Event()
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}  # how long each phase's jobs took to settle

    def begin(self, phase: str) -> None:
        self.started[phase] = time.monotonic()
        self.began[phase].set()

    def end(self, phase: str, settled: bool) -> bool:
        """After the phase's jobs settled: the fault of this phase must have happened before the next."""
        self.seconds[phase] = round(time.monotonic() - self.started[phase], 1)
        self.settled[phase].set()
        if phase == self.fault_phase and not self.injected.wait(timeout=180):
            raise TimeoutError("the fault was not injected within 180 s")
        return settled


@dataclass
class Run:
    index: int
    fault: str
    phase: str
    at: float  # the share of the phase's chunks DONE when the fault comes
    delay_s: float = 0.0  # seconds into the phase when it came
    election_id: int | None = None
    applied: str = ""  # what the injector did, or why it did nothing
    chunks: int = 0
    ok: int = 0
    lost: int = 0
    duplicated: int = 0
    failed_as_expected: int = 0
    stuck_jobs: int = 0
    jobs: int = 0
    extra_attempts: int = 0  # attempts beyond one per chunk: the retries the fault cost
    counts_ok: bool | None = None
    dlq: dict[str, int] = field(default_factory=dict)
    dlq_ok: bool = True
    api_500s: int = 0
    api_500_detail: list[str] = field(default_factory=list)
    seconds: float = 0.0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.stuck_jobs
            or self.counts_ok is False
            or not self.dlq_ok
            or self.problems
        )


class Harness:
    def __init__(self, args: argparse.Namespace, db_url: str, amqp_url: str, cluster: Any, tmp: Path):
        from pydantic import SecretStr
        from sqlalchemy import create_engine

        from service.security.auth import Role, issue_token
        from service.settings import Settings

        self.args, self.db_url, self.amqp_url, self.cluster = args, db_url, amqp_url, cluster
        self.db_name = db_url.rsplit("/", 1)[1]
        self.vhost = amqp_url.rsplit("/", 1)[1]
        self.server_secret = secrets.token_urlsafe(48)
        self.jwt_secret = secrets.token_urlsafe(48)
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AMARVOTE_", "RAY_"))},
            **cluster.client_env,
            "RAY_USAGE_STATS_ENABLED": "0",
            "AMARVOTE_DATABASE_URL": db_url,
            "AMARVOTE_AMQP_URL": amqp_url,
            "AMARVOTE_RAY_ADDRESS": cluster.address,
            "AMARVOTE_SERVER_SECRET": args.server_secret,
            "AMARVOTE_JWT_SECRET": self.jwt_secret,
            "AMARVOTE_DATA_DIR": str(tmp / "data"),
            "AMARVOTE_AUTO_MIGRATE": "false",
            "AMARVOTE_LEASE_SECONDS": str(LEASE_SECONDS),
            "AMARVOTE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "AMARVOTE_RETRY_BACKOFF_SECONDS": "0.5",
            "AMARVOTE_MAX_IN_FLIGHT": "2",
            "AMARVOTE_TASK_MEMORY_MB": "64",
            "AMARVOTE_KDF_TIME_COST": "1",
            "AMARVOTE_KDF_MEMORY_KIB": "1024",
            "AMARVOTE_KDF_PARALLELISM": "1",
            "AMARVOTE_KDF_WAIT_SECONDS": "10",
            "AMARVOTE_JOB_RATE_LIMIT_PER_MINUTE": "0",
            "AMARVOTE_DECRYPTION_SLICE_SELECTIONS": "2",
            "AMARVOTE_SPOILED_CHUNK_SIZE": "1",
        }
        self.settings = Settings(database_url=db_url, jwt_secret=SecretStr(self.jwt_secret))
        self.admin = issue_token(self.settings, "chaos", Role.ADMIN, ttl_seconds=6 * 3600)
        self.engine = create_engine(
            self.sqlalchemy_url,
            pool_pre_ping=True,
            connect_args={"application_name": HARNESS_APP},
        )
        (tmp / "logs").mkdir()
        self.stack = Stack(self.env, tmp / "logs", self.port)
        self.api = Api(f"http://127.0.0.1:{self.port}")

    @property
    def sqlalchemy_url(self) -> str:
        return self.settings.sqlalchemy_url

    # ---------------------------------------------------------------- set-up

    def start(self) -> None:
        subprocess.run([AMARVOTE, "db", "upgrade"], env=self.env, check=True, capture_output=True)
        log("database migrated")
        for name in ("api", "relay", "reconcile", "bridge"):
            self.stack.start(name)
        self.wait_healthy()

    def wait_healthy(self, deadline: float = 90) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                if self.api.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise TimeoutError("the API did not come up")

    # ---------------------------------------------------------------- the election

    def election(self, run: Run, rng: random.Random, line: Timeline) -> None:
        a, api, admin = self.args, self.api, self.admin
        e = api.json(
            "POST",
            "/api/elections",
            token=admin,
            body={
                "name": f"chaos-{run.index}",
                "number_of_guardians": a.guardians,
                "quorum": a.quorum,
                "candidate_names": CANDIDATES,
            },
        )
        eid = run.election_id = int(e["election_id"])
        passwords = {f"g{i + 1}": f"passphrase of g{i + 1}" for i in range(a.guardians)}
        kc = api.json(
            "POST", f"/api/elections/{eid}/key-ceremony", token=admin, body={"guardian_ids": list(passwords)}
        )
        creds = {g["guardian_id"]: g for g in kc["guardians"]}
        for g in creds.values():
            # Each guardian takes its credential file out of the service's custody with its own token.
            g["credentials"] = api.json(
                "POST",
                f"/api/elections/{eid}/guardians/{g['guardian_id']}/claim",
                token=g["token"],
                body={"passphrase": passwords[g["guardian_id"]]},
            )["credentials"]
        api.json("POST", f"/api/elections/{eid}/open", token=admin)
        expected: Counter[str] = Counter()
        spoiled: dict[str, str | None] = {}
        for i in range(a.ballots):
            vote = rng.choice([*CANDIDATES, None])  # None: an undervote
            action = "spoil" if i % 4 == 3 else "cast"
            ballot_id = f"r{run.index}-v{i}"
            ballot = {
                "object_id": ballot_id,
                "style_id": "ballot-style-1",
                "contests": [
                    {
                        "object_id": "contest-1",
                        "ballot_selections": [] if vote is None else [{"object_id": vote, "vote": 1}],
                    }
                ],
            }
            api.json(
                "POST",
                f"/api/elections/{eid}/ballots/encrypt",
                token=admin,
                body={"ballot": ballot, "action": action},
            )
            if action == "cast" and vote is not None:
                expected[vote] += 1
            elif action == "spoil":
                spoiled[ballot_id] = vote
        bad_ballot = self.store_bad_ballot(eid, run) if run.fault == "bad_chunk" else None
        api.json("POST", f"/api/elections/{eid}/close", token=admin)

        line.begin("tally")
        self.create_job(eid, "TALLY", "/api/tally/create", admin, {"election_id": eid, "chunk_size": 2})
        if not line.end("tally", self.wait_jobs(eid, run)):
            return
        if bad_ballot is not None:
            return  # the tally FAILED as it must: nothing to decrypt

        guardians = list(creds)
        present = guardians[: len(guardians) - a.missing]
        missing = guardians[len(guardians) - a.missing :]
        line.begin("decryption")
        for g in present:
            body = {
                "election_id": eid,
                "guardian_id": g,
                "credentials": creds[g]["credentials"],
                "passphrase": passwords[g],
                "missing_guardian_ids": missing,
            }
            self.create_job(eid, "PARTIAL_DECRYPTION", "/api/decryption/create", creds[g]["token"], body, g)
        if not line.end("decryption", self.wait_jobs(eid, run)):
            return
        line.begin("combine")
        self.create_job(eid, "COMBINE_DECRYPTION", "/api/combine/decryption", admin, {"election_id": eid})
        if not line.end("combine", self.wait_jobs(eid, run)):
            return
        res = api.json("GET", f"/api/elections/{eid}/results", token=admin)
        got = {s["selection_id"]: s["votes"] for s in res["contests"][0]["selections"]}
        want = {c: expected.get(c, 0) for c in CANDIDATES}
        spoiled_ok = set(res["spoiled_ballots"]) == set(spoiled) and all(
            res["spoiled_ballots"][b]["contest-1"] == {c: int(c == v) for c in CANDIDATES}
            for b, v in spoiled.items()
        )
        run.counts_ok = got == want and spoiled_ok
        if not run.counts_ok:
            run.problems.append(f"counts {got} != plaintexts {want} (spoiled ok: {spoiled_ok})")

    def create_job(
        self, eid: int, op: str, path: str, token: str, body: dict[str, Any], guardian: str | None = None
    ) -> None:
        """POST that creates a job, safe to repeat: after a lost answer (the API killed, a dropped
        connection) the job may exist; a 409 then means it does, and is looked up."""
        r = self.api.call("POST", path, token=token, body=body, accept=(409,), deadline=180)
        if r.status_code == 409 and not self.job_exists(eid, op, guardian):
            raise RuntimeError(f"{path}: 409 {r.text[:300]}")

    def job_exists(self, eid: int, op: str, guardian: str | None) -> bool:
        jobs = self.api.json("GET", f"/api/jobs?election_id={eid}", token=self.admin)
        return any(
            j["operationType"] == op and (guardian is None or j["guardianId"] == guardian) for j in jobs
        )

    def wait_jobs(self, eid: int, run: Run) -> bool:
        """Until every job of the election is COMPLETED or FAILED; False (stuck) after the wait."""
        end = time.monotonic() + self.args.job_wait
        while time.monotonic() < end:
            jobs = self.api.json("GET", f"/api/jobs?election_id={eid}", token=self.admin, deadline=180)
            if jobs and all(j["status"] in ("COMPLETED", "FAILED") for j in jobs):
                return all(j["status"] == "COMPLETED" for j in jobs) or run.fault == "bad_chunk"
            time.sleep(0.5)
        run.problems.append(f"jobs not settled within {self.args.job_wait:.0f} s")
        return False

    def store_bad_ballot(self, eid: int, run: Run) -> str:
        """A ballot whose first selection's proof is broken, stored past the API (which refuses it):
        the one way to make a chunk's body raise at every attempt without a hook in the service."""
        from compute.constants import Q
        from service.db.models import Election
        from service.db.session import session_factory, transaction
        from service.elections import ballots, crypto

        factory = session_factory(self.engine)
        with transaction(factory) as s:
            e = s.get(Election, eid)
            assert e is not None and e.context is not None
            manifest, context = e.manifest, e.context
        plaintext = {
            "object_id": f"r{run.index}-bad",
            "style_id": "ballot-style-1",
            "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": "Ann", "vote": 1}]}],
        }
        enc = crypto.encrypt_plaintext(plaintext, manifest, context, eid)
        doc = enc.submitted(crypto.ballot_state("cast")).to_json()
        proof = doc["contests"][0]["ballot_selections"][0]["proof"]
        proof["proof_zero_response"] = f"{(int(proof['proof_zero_response'], 16) + 1) % int(Q):064X}"
        bad = crypto.parse_submitted(doc, crypto.ballot_state("cast"))
        with transaction(factory) as s:
            ballots.store(s, eid, [ballots.prepared(bad)])
        run.applied = f"ballot {bad.object_id} with a broken proof stored before the close"
        return str(bad.object_id)

    # ---------------------------------------------------------------- faults

    def inject(self, run: Run, line: Timeline) -> None:
        """The fault, once the share ``run.at`` of its phase's chunks is done (a moment measured in work,
        not seconds: phases take 1 to 30 s with the machine's load), or when the phase's jobs settled
        first; always before the next phase (the driver waits for it)."""
        try:
            if run.fault == "bad_chunk":
                return  # applied by the driver itself, before the close
            if not line.began[run.phase].wait(timeout=3600) or line.aborted.is_set():
                run.applied = "not applied: the election stopped before its phase"
                return
            self.await_progress(run, line.settled[run.phase])
            run.delay_s = round(time.monotonic() - line.started[run.phase], 1)
            try:
                run.applied = getattr(self, f"fault_{run.fault}")(run, line.settled[run.phase])
            except Exception as exc:  # the harness must report, not die, if a fault cannot be applied
                run.applied = f"not applied: {type(exc).__name__}: {exc}"
            log(
                f"run {run.index}: {run.fault} ({run.phase} at {run.at:.0%}, +{run.delay_s} s): {run.applied}"
            )
        finally:
            line.injected.set()

    def await_progress(self, run: Run, settled: threading.Event) -> None:
        from sqlalchemy import func, select

        from service.db.models import ChunkTask, ElectionJob

        ops = PHASE_OPERATIONS[run.phase]
        while not settled.is_set():
            with self.engine.connect() as c:
                total, done = c.execute(
                    select(func.count(), func.count().filter(ChunkTask.state == "DONE"))
                    .select_from(ChunkTask)
                    .join(ElectionJob, ElectionJob.job_id == ChunkTask.job_id)
                    .where(ElectionJob.election_id == run.election_id, ElectionJob.operation_type.in_(ops))
                ).one()
            # At least one chunk left: "at 90%" of 4 chunks must not mean all 4 done.
            if total and done >= min(int(run.at * total), total - 1):
                return
            time.sleep(0.02)

    def running(self, run: Run) -> int:
        """Chunk tasks of the election RUNNING now: what a kill catches in flight."""
        from sqlalchemy import func, select

        from service.db.models import ChunkTask, ElectionJob

        with self.engine.connect() as c:
            return int(
                c.execute(
                    select(func.count())
                    .select_from(ChunkTask)
                    .join(ElectionJob, ElectionJob.job_id == ChunkTask.job_id)
                    .where(ElectionJob.election_id == run.election_id, ChunkTask.state == "RUNNING")
                ).scalar_one()
            )

    def await_in_flight(self, run: Run, settled: threading.Event, seconds: float = 30) -> int:
        """A chunk running, if one comes before the phase settles: the kill that matters catches one."""
        end = time.monotonic() + seconds
        while True:
            n = self.running(run)
            if n or settled.is_set() or time.monotonic() > end:
                return n
            time.sleep(0.05)

    def fault_kill_bridge(self, run: Run, settled: threading.Event) -> str:
        in_flight = self.await_in_flight(run, settled)
        pid = self.stack.kill9("bridge")
        time.sleep(1)
        self.stack.restart("bridge")
        return f"bridge pid {pid} killed (-9) with {in_flight} chunk(s) running, restarted"

    def fault_kill_api(self, run: Run, settled: threading.Event) -> str:
        in_flight = self.running(run)
        pid = self.stack.kill9("api")
        time.sleep(1)
        self.stack.restart("api")
        return f"API pid {pid} killed (-9) with {in_flight} chunk(s) running, restarted"

    def fault_kill_worker(self, run: Run, settled: threading.Event) -> str:
        from tests.raycluster import _processes_of

        # This cluster's raylets (found once: a scan of every process is slow next to a short chunk);
        # their worker processes are this cluster's, never another Ray's on the machine.
        raylets = [p for p in _processes_of(self.cluster.port) if "raylet" in " ".join(p.cmdline())]
        end = time.monotonic() + 60
        while time.monotonic() < end and not settled.is_set():
            for raylet in raylets:
                for w in _descendants(raylet.pid):
                    try:
                        title = " ".join(w.cmdline())
                    except psutil.Error:
                        continue
                    if "ray::chunk:" in title:
                        w.kill()
                        return f"Ray worker pid {w.pid} ({title.split()[0]}) killed (-9)"
            time.sleep(0.01)
        return "not applied: no chunk ran on a worker meanwhile"

    def fault_pg_terminate(self, run: Run, settled: threading.Event) -> str:
        from sqlalchemy import text

        in_flight = self.await_in_flight(run, settled)

        with self.engine.connect() as c:
            n = c.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = :db AND pid <> pg_backend_pid() AND application_name <> :me"
                ),
                {"db": self.db_name, "me": HARNESS_APP},
            ).scalar()
            c.commit()
        return f"{n} session(s) of database {self.db_name} terminated, {in_flight} chunk(s) running"

    def fault_amqp_close(self, run: Run, settled: threading.Event) -> str:
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "pid", "vhost"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        pids = [
            ln.split("\t")[0] for ln in out.splitlines() if ln.startswith("<") and ln.endswith(self.vhost)
        ]
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "chaos harness"],
                capture_output=True,
                timeout=60,
            )
        return f"{len(pids)} connection(s) of vhost {self.vhost} closed"

    def fault_duplicate_publish(self, run: Run, settled: threading.Event) -> str:
        from sqlalchemy import select

        from bridge.brokers.rabbitmq import EXCHANGE, message_body, routing_key_for
        from service.db.models import ElectionJob, Outbox
        from service.db.session import session_factory, transaction

        end = time.monotonic() + 30
        while time.monotonic() < end:
            with transaction(session_factory(self.engine)) as s:
                rows = s.execute(
                    select(Outbox.job_id, Outbox.task_id, Outbox.operation)
                    .join(ElectionJob, ElectionJob.job_id == Outbox.job_id)
                    .where(ElectionJob.election_id == run.election_id, Outbox.sent_at.is_not(None))
                ).all()
            if rows:
                job_id, task_id, op = random.choice(rows)
                body = json.dumps(message_body(job_id, task_id, op), separators=(",", ":")).encode()
                self._publish(EXCHANGE, routing_key_for(op), body)
                return f"task {task_id} ({op}) published again"
            time.sleep(0.2)
        return "not applied: no message sent yet"

    def fault_poison(self, run: Run, settled: threading.Event) -> str:
        from bridge.brokers.rabbitmq import EXCHANGE, WORK_QUEUES

        q = random.choice(WORK_QUEUES)
        self._publish(EXCHANGE, q.routing_key, POISON)
        run.dlq["poison_expected"] = 1
        return f"a malformed body on {q.name}"

    def _publish(self, exchange: str, routing_key: str, body: bytes) -> None:
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish(
                exchange, routing_key, body, pika.BasicProperties(delivery_mode=2), mandatory=True
            )
        finally:
            conn.close()

    def fault_rabbit_restart(self, run: Run, settled: threading.Event) -> str:
        subprocess.run(["rabbitmqctl", "stop_app"], capture_output=True, check=True, timeout=120)
        time.sleep(5)
        subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, check=True, timeout=120)
        return "RabbitMQ stopped 5 s (stop_app/start_app)"

    def fault_pg_restart(self, run: Run, settled: threading.Event) -> str:
        line = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
        version, name = line.split()[:2]
        subprocess.run(
            ["pg_ctlcluster", version, name, "restart"], capture_output=True, check=True, timeout=120
        )
        return f"PostgreSQL {version}/{name} restarted"

    # ---------------------------------------------------------------- checks

    def check(self, run: Run, bad_ballot_expected: bool) -> None:
        """Every accepted chunk of the election, from PostgreSQL's rows; then the dead-letter queues."""
        from sqlalchemy import func, select

        from service.db.models import (
            Ballot,
            ChunkTask,
            CompensatedShare,
            DecryptionShare,
            ElectionCenter,
            ElectionJob,
        )
        from service.db.session import session_factory, transaction

        eid = run.election_id
        if eid is None:
            run.problems.append("no election was created")
            return
        expected_dead: set[int] = set()
        with transaction(session_factory(self.engine)) as s:
            jobs = list(s.scalars(select(ElectionJob).where(ElectionJob.election_id == eid)))
            run.jobs = len(jobs)
            bad_seq = (
                s.scalar(select(Ballot.seq).where(Ballot.election_id == eid, Ballot.object_id.like("%-bad")))
                if bad_ballot_expected
                else None
            )
            for job in jobs:
                if job.status not in ("COMPLETED", "FAILED"):
                    run.stuck_jobs += 1
                tasks = s.execute(
                    select(ChunkTask, ElectionCenter)
                    .join(ElectionCenter, ElectionCenter.id == ChunkTask.chunk_id)
                    .where(ChunkTask.job_id == job.job_id)
                ).all()
                per_unit = Counter(t.chunk_id for t, _ in tasks)
                run.duplicated += sum(n - 1 for n in per_unit.values())
                done_tasks = [t for t, _ in tasks if t.state == "DONE"]
                if (job.processed_chunks or 0) > len(done_tasks) or len(tasks) != job.total_chunks:
                    run.duplicated += 1
                    run.problems.append(
                        f"job {job.operation_type}: counters {job.processed_chunks}/{job.total_chunks}"
                        f" for {len(done_tasks)} DONE of {len(tasks)} tasks"
                    )
                for t, unit in tasks:
                    run.chunks += 1
                    run.extra_attempts += max(0, (t.attempts or 0) - 1)
                    has_bad = (
                        bad_seq is not None
                        and unit.kind == "chunk"
                        and unit.first_seq is not None
                        and unit.first_seq <= bad_seq <= (unit.last_seq or -1)
                    )
                    if has_bad:
                        if t.state == "FAILED" and t.attempts == MAX_ATTEMPTS and job.status == "FAILED":
                            run.failed_as_expected += 1
                            expected_dead.add(t.id)
                        else:
                            run.problems.append(
                                f"the bad chunk ended {t.state} after {t.attempts} attempt(s),"
                                f" job {job.status}"
                            )
                        continue
                    if t.state != "DONE" or not self._has_result(
                        s, job, t, unit, DecryptionShare, CompensatedShare
                    ):
                        run.lost += 1
                        run.problems.append(
                            f"{job.operation_type} task {t.id}: {t.state}, attempts {t.attempts},"
                            f" {(t.last_error or '')[:120]}"
                        )
                    else:
                        run.ok += 1
            chunks = list(
                s.scalars(
                    select(ElectionCenter).where(
                        ElectionCenter.election_id == eid, ElectionCenter.kind == "chunk"
                    )
                )
            )
            ballots = s.scalar(select(func.count()).select_from(Ballot).where(Ballot.election_id == eid)) or 0
            covered = sum((c.last_seq - c.first_seq + 1) for c in chunks if c.first_seq and c.last_seq)
            ranges = sorted((c.first_seq or 0, c.last_seq or 0) for c in chunks)
            overlap = any(b[0] <= a[1] for a, b in itertools.pairwise(ranges))
            if chunks and (overlap or sum(c.ballot_count for c in chunks) != ballots):
                run.duplicated += 1
                run.problems.append(
                    f"chunks cover {covered} ballot seqs (overlap: {overlap}) for {ballots} ballots"
                )
            if not bad_ballot_expected:
                cast = s.scalar(
                    select(func.count())
                    .select_from(Ballot)
                    .where(Ballot.election_id == eid, Ballot.state == 1)
                )
                tallied = sum(c.cast_count or 0 for c in chunks)
                if tallied != cast:
                    run.duplicated += tallied > (cast or 0)
                    run.problems.append(f"{tallied} cast ballots tallied, {cast} cast")
        if bad_ballot_expected and run.failed_as_expected != 1:
            run.problems.append(f"{run.failed_as_expected} chunk(s) failed as expected, not 1")
        self.check_dead_letters(run, expected_dead)

    @staticmethod
    def _has_result(s: Any, job: Any, t: Any, unit: Any, share: Any, comp: Any) -> bool:
        from sqlalchemy import func, select

        op = job.operation_type
        if op == "TALLY":
            return unit.encrypted_tally is not None and unit.cast_count is not None
        if op == "PARTIAL_DECRYPTION":
            n = s.scalar(
                select(func.count())
                .select_from(share)
                .where(share.chunk_id == unit.id, share.guardian_id == job.guardian_id)
            )
            return bool(n == 1)
        if op == "COMPENSATED_DECRYPTION":
            n = s.scalar(
                select(func.count())
                .select_from(comp)
                .where(
                    comp.chunk_id == unit.id,
                    comp.guardian_id == job.guardian_id,
                    comp.missing_guardian_id == job.missing_guardian_id,
                )
            )
            return bool(n == 1)
        return unit.result is not None  # COMBINE_DECRYPTION

    def check_dead_letters(self, run: Run, expected_dead: set[int]) -> None:
        """Drain every dead-letter queue of the vhost: only the poison and the failed chunk's message may
        be there (the poison must be)."""
        import pika

        from bridge.brokers.rabbitmq import WORK_QUEUES

        poison_expected = run.dlq.pop("poison_expected", 0)
        found: Counter[str] = Counter()
        dead_tasks: Counter[int] = Counter()
        end = time.monotonic() + (15 if poison_expected or expected_dead else 0)
        while True:
            conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            try:
                ch = conn.channel()
                for q in WORK_QUEUES:
                    while True:
                        method, _props, body = ch.basic_get(q.dead_letter_queue, auto_ack=True)
                        if method is None:
                            break
                        if body == POISON:
                            found["poison"] += 1
                            continue
                        try:
                            task_id = int(json.loads(body)["task_id"])
                        except (ValueError, KeyError, TypeError):
                            found["other"] += 1
                            continue
                        dead_tasks[task_id] += 1
                        found["failed_chunk" if task_id in expected_dead else "healthy_chunk"] += 1
            finally:
                conn.close()
            complete = found["poison"] >= poison_expected and all(dead_tasks[t] for t in expected_dead)
            if complete or time.monotonic() > end:
                break
            time.sleep(0.5)
        run.dlq = dict(found)
        ok = (
            found["poison"] == poison_expected
            and not found["other"]
            and not found["healthy_chunk"]
            and all(dead_tasks[t] == 1 for t in expected_dead)
        )
        if not ok:
            run.dlq_ok = False
            run.problems.append(
                f"dead letters {dict(found)}, expected poison {poison_expected},"
                f" failed chunks {len(expected_dead)}"
            )


# ------------------------------------------------------------------------------------------ the runs


def one_run(h: Harness, index: int, fault: str, rng: random.Random) -> Run:
    phase = rng.choice(PHASES)
    # A worker can only be killed while a chunk runs: early in the phase, then the injector waits for one.
    run = Run(index, fault, "ballots" if fault == "bad_chunk" else phase, round(rng.uniform(0, 0.9), 2))
    line = Timeline(run.phase)
    injector = threading.Thread(target=h.inject, args=(run, line), daemon=True)
    injector.start()
    t0 = time.monotonic()
    before_500s = h.api.server_errors
    try:
        h.election(run, rng, line)
    except Exception as exc:
        run.problems.append(f"driver: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        line.aborted.set()
        for ev in line.began.values():
            ev.set()  # an injector still waiting for a phase that never came gives up
        injector.join(timeout=180)
    # A restarted bridge or API must be back before the checks and the next run.
    for name in ("api", "bridge", "relay", "reconcile"):
        if not h.stack.alive(name):
            run.problems.append(f"{name} exited on its own")
            h.stack.restart(name)
    h.wait_healthy()
    h.check(run, fault == "bad_chunk")
    run.api_500s = h.api.server_errors - before_500s
    run.api_500_detail = h.api.server_error_log[before_500s:]
    run.phase_seconds = dict(line.seconds)
    run.seconds = round(time.monotonic() - t0, 1)
    return run


def sabotaged_run(h: Harness, index: int, rng: random.Random) -> dict[str, Any]:
    """The checker must be able to fail: one more election without a fault, then a DONE chunk put back
    to PENDING (a loss), a job's counter bumped (a duplicate), a finished job put back IN_PROGRESS (a stuck
    job) and a healthy chunk's message dropped into a dead-letter queue. Every one must be reported."""
    from sqlalchemy import text

    from bridge.brokers.rabbitmq import message_body, queue_for

    run = Run(index, "self-check", "-", 0.0)
    h.election(run, rng, Timeline("none"))
    with h.engine.begin() as c:
        jobs = c.execute(
            text(
                "SELECT job_id, operation_type FROM election_job WHERE election_id = :e ORDER BY created_at"
            ),
            {"e": run.election_id},
        ).all()
        by_op = {op: jid for jid, op in jobs}
        task = c.execute(
            text("SELECT id FROM chunk_task WHERE job_id = :j AND state = 'DONE' LIMIT 1"),
            {"j": by_op["TALLY"]},
        ).scalar_one()
        c.execute(text("UPDATE chunk_task SET state = 'PENDING' WHERE id = :t"), {"t": task})
        # A chunk counted twice (the job's counters are bounded by a CHECK; a sub-tally's count is not).
        c.execute(
            text(
                "UPDATE election_center SET cast_count = cast_count + 1 WHERE id ="
                " (SELECT chunk_id FROM chunk_task WHERE job_id = :j AND id <> :t LIMIT 1)"
            ),
            {"j": by_op["TALLY"], "t": task},
        )
        c.execute(
            text("UPDATE election_job SET status = 'IN_PROGRESS' WHERE job_id = :j"),
            {"j": by_op["COMBINE_DECRYPTION"]},
        )
    body = json.dumps(message_body(by_op["TALLY"], task, "TALLY"), separators=(",", ":")).encode()
    h._publish("", queue_for("TALLY").dead_letter_queue, body)  # the default exchange: straight in
    h.check(run, False)
    return {
        "lost": run.lost,
        "duplicated": run.duplicated,
        "stuck_jobs": run.stuck_jobs,
        "dead_letters_flagged": not run.dlq_ok,
        "detected": bool(run.lost and run.duplicated and run.stuck_jobs and not run.dlq_ok),
    }


def schedule(faults: list[str], runs: int, rng: random.Random) -> list[str]:
    """Every fault as evenly as the runs allow, in a random order."""
    out: list[str] = []
    while len(out) < runs:
        batch = list(faults)
        rng.shuffle(batch)
        out += batch
    return out[:runs]


def report(runs: list[Run], args: argparse.Namespace, wall: float) -> tuple[str, dict[str, Any]]:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"chaos: {len(runs)} elections, one fault each")
    cols = [
        "run",
        "fault",
        "phase",
        "chunks",
        "ok",
        "lost",
        "dup",
        "failed*",
        "stuck",
        "retries",
        "counts",
        "dlq",
        "s",
        "applied",
    ]
    for c in cols:
        table.add_column(c)
    rows = []
    for r in runs:
        row = [
            str(r.index),
            r.fault,
            (
                f"{r.phase} at {r.at:.0%} (+{r.delay_s:.0f} of {r.phase_seconds[r.phase]:.0f} s)"
                if r.phase in r.phase_seconds
                else r.phase
            ),
            str(r.chunks),
            str(r.ok),
            str(r.lost),
            str(r.duplicated),
            str(r.failed_as_expected),
            str(r.stuck_jobs),
            str(r.extra_attempts),
            {True: "ok", False: "WRONG", None: "n/a"}[r.counts_ok],
            ",".join(f"{k}:{v}" for k, v in sorted(r.dlq.items())) or "empty",
            f"{r.seconds:.0f}",
            r.applied,
        ]
        rows.append(row)
        table.add_row(*row, style=None if r.passed else "red")
    Console(stderr=True, width=220).print(table)
    totals = {
        "runs": len(runs),
        "faults": dict(Counter(r.fault for r in runs)),
        "applied": sum(not r.applied.startswith("not applied") for r in runs),
        "chunks": sum(r.chunks for r in runs),
        "ok": sum(r.ok for r in runs),
        "lost": sum(r.lost for r in runs),
        "duplicated": sum(r.duplicated for r in runs),
        "failed_as_expected": sum(r.failed_as_expected for r in runs),
        "stuck_jobs": sum(r.stuck_jobs for r in runs),
        "wrong_counts": sum(r.counts_ok is False for r in runs),
        "unexpected_dead_letters": sum(not r.dlq_ok for r in runs),
        "api_500s": sum(r.api_500s for r in runs),
        "failed_runs": sum(not r.passed for r in runs),
        "wall_s": round(wall, 1),
    }
    md = [
        f"`{' '.join(['python scripts/chaos.py', *sys.argv[1:]])}`: {len(runs)} elections ({args.ballots}"
        f" ballots, chunks of 2, {args.guardians} guardians, quorum {args.quorum}, {args.missing} missing),"
        f" one fault each, seed {args.seed}, {wall:.0f} s. phase: when the fault came (once that share of the"
        " phase's chunks was done; seconds into the phase, of how long its jobs took to settle); failed* ="
        " chunks that failed as they must (the bad ballot's); retries = attempts beyond one per chunk;"
        " dlq = what the dead-letter queues held.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(x.replace("|", "/") for x in row) + " |" for row in rows),
        "",
        f"Totals: {totals['chunks']} chunks, {totals['ok']} ok, {totals['lost']} lost,"
        f" {totals['duplicated']} duplicated, {totals['failed_as_expected']} failed as expected,"
        f" {totals['stuck_jobs']} stuck jobs, {totals['wrong_counts']} wrong counts,"
        f" {totals['unexpected_dead_letters']} runs with unexpected dead letters,"
        f" {totals['api_500s']} API 500s;"
        f" faults applied in {totals['applied']} of {len(runs)} runs.",
        "",
        "Per fault:",
        "",
        "| fault | runs | applied | chunks | ok | lost | duplicated | failed as expected | stuck jobs"
        " | retries | wrong counts | unexpected dead letters | API 500s |",
        "|---|" + "---:|" * 12,
    ]
    for fault in sorted({r.fault for r in runs}):
        rs = [r for r in runs if r.fault == fault]
        md.append(
            f"| {fault} | {len(rs)} | {sum(not r.applied.startswith('not applied') for r in rs)}"
            f" | {sum(r.chunks for r in rs)} | {sum(r.ok for r in rs)} | {sum(r.lost for r in rs)}"
            f" | {sum(r.duplicated for r in rs)} | {sum(r.failed_as_expected for r in rs)}"
            f" | {sum(r.stuck_jobs for r in rs)} | {sum(r.extra_attempts for r in rs)}"
            f" | {sum(r.counts_ok is False for r in rs)} | {sum(not r.dlq_ok for r in rs)}"
            f" | {sum(r.api_500s for r in rs)} |"
        )
    if any(r.api_500_detail for r in runs):
        md += ["", "API 500s (retried by the client; an outage should give 503):", ""]
        md += [f"- run {r.index} ({r.fault}): {d}" for r in runs for d in r.api_500_detail]
    return "\n".join(md) + "\n", {"totals": totals, "runs": [asdict(r) for r in runs]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="elections (K)")
    ap.add_argument(
        "--budget", type=float, default=900, help="no new election after this many seconds of elections"
    )
    ap.add_argument("--quick", action="store_true", help="CI: 3 runs of 4 ballots, 2 guardians, local faults")
    ap.add_argument("--faults", help=f"comma-separated, from {', '.join(LOCAL_FAULTS + GLOBAL_FAULTS)}")
    ap.add_argument("--global-faults", action="store_true", help="add rabbit_restart and pg_restart")
    ap.add_argument("--ballots", type=int, default=8)
    ap.add_argument("--guardians", type=int, default=3)
    ap.add_argument("--quorum", type=int, default=2)
    ap.add_argument("--job-wait", type=float, default=150.0, help="seconds before a phase's jobs are stuck")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--no-self-check",
        dest="self_check",
        action="store_false",
        help="skip the last election whose rows are doctored to show the checks catch a loss",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="where NAME.{json,md} go")
    ap.add_argument("--name", default="chaos", help="file name of the results (default chaos)")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.ballots, args.guardians, args.quorum, args.budget = 3, 4, 2, 2, 150
    args.missing = args.guardians - args.quorum
    args.seed = args.seed if args.seed is not None else random.randrange(2**31)
    faults = args.faults.split(",") if args.faults else list(LOCAL_FAULTS)
    if args.global_faults:
        faults += [f for f in GLOBAL_FAULTS if f not in faults]
    unknown = set(faults) - set(LOCAL_FAULTS + GLOBAL_FAULTS)
    if unknown:
        ap.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    args.server_secret = secrets.token_urlsafe(48)
    rng = random.Random(args.seed)
    plan = schedule(faults, args.runs, rng)
    log(f"seed {args.seed}: {plan}")

    from tests.conftest import new_vhost
    from tests.raycluster import ray_cluster

    runs: list[Run] = []
    t0 = time.monotonic()
    self_check: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            db_url = stack.enter_context(fresh_database())
            amqp_url = stack.enter_context(new_vhost())
            log(f"database and vhost made in {time.monotonic() - t0:.0f} s")
            node_env = {"AMARVOTE_SERVER_SECRET": args.server_secret, "AMARVOTE_DATABASE_URL": db_url}
            cluster = stack.enter_context(ray_cluster(node_env, workers=1, cpus=1, own_temp_dir=True))
            log(f"Ray head and worker up at {time.monotonic() - t0:.0f} s")
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="amarvote-chaos-")))
            h = Harness(args, db_url, amqp_url, cluster, tmp)
            stack.callback(h.engine.dispose)
            stack.callback(h.stack.stop)
            h.start()
            log(f"stack up in {time.monotonic() - t0:.0f} s (logs in {tmp / 'logs'})")
            t_runs = time.monotonic()
            for i, fault in enumerate(plan, 1):
                if runs and time.monotonic() - t_runs > args.budget:
                    log(f"budget of {args.budget:.0f} s spent: {len(runs)} runs")
                    break
                run = one_run(h, i, fault, rng)
                runs.append(run)
                verdict = "ok" if run.passed else "FAILED " + "; ".join(run.problems)
                log(f"run {i} {fault}: {verdict} ({run.seconds} s)")
            if args.self_check:
                try:
                    self_check = sabotaged_run(h, len(runs) + 1, rng)
                except Exception as exc:
                    self_check = {"detected": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                log(f"self-check: {self_check}")
            if any(not r.passed for r in runs) and os.environ.get("CHAOS_KEEP_LOGS"):
                keep = Path(tempfile.mkdtemp(prefix="amarvote-chaos-logs-"))
                subprocess.run(["cp", "-r", str(tmp / "logs"), str(keep)], check=False)
                log(f"logs kept in {keep}")
    finally:
        # Written whatever happened: a harness that dies half-way still reports the runs it made.
        md, doc = report(runs, args, time.monotonic() - t0)
        if self_check:
            md += (
                "\nChecker self-check (one more election, then its rows and a dead-letter queue doctored):"
                f" {'every sabotage detected' if self_check['detected'] else 'NOT DETECTED'}"
                f" ({self_check}).\n"
            )
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.md").write_text(md)
        (args.out / f"{args.name}.json").write_text(
            json.dumps({"seed": args.seed, **doc, "self_check": self_check}, indent=1, default=str)
        )
        print(md)
    bad = doc["totals"]["failed_runs"] or (args.self_check and not self_check.get("detected"))
    return 1 if (not runs or bad) else 0


if __name__ == "__main__":
    sys.exit(main())
