"""What the ``amarvote guardian`` tests share: the API served by uvicorn on 127.0.0.1 (every request and
response body recorded; a response can be doctored), the executor over the outbox on the session's local
Ray, and each guardian run as its own ``amarvote guardian`` process with its own folder."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from compute.guardian import PrivateGuardianRecord
from compute.polynomial import compute_polynomial_coordinate
from compute.sealing import open_with_passphrase
from service.api.app import create_app
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.conftest import TEST_JWT_SECRET, TEST_SERVER_SECRET

ROOT = Path(__file__).resolve().parents[2]


def settings_for(db_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=data_dir,
        server_secret=TEST_SERVER_SECRET,  # the session's local Ray workers hold it
        jwt_secret=TEST_JWT_SECRET,
        kdf_time_cost=1,
        kdf_memory_kib=1024,
        kdf_parallelism=1,
        job_rate_limit_per_minute=0,
        auto_migrate=False,
        max_in_flight=2,
        task_memory_mb=64,
        decryption_slice_selections=2,  # 3 selections: 2 slices
        spoiled_chunk_size=1,  # one spoiled run per spoiled ballot
    )


class Recorder:
    """ASGI wrapper: keeps every request and response body; ``doctor[path]`` rewrites a GET's JSON answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[bytes] = []
        self.doctor: dict[str, Callable[[Any], Any]] = {}
        self.lock = threading.Lock()

    def _keep(self, body: bytes) -> None:
        with self.lock:
            self.bodies.append(body)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def recv() -> Any:
            m = await receive()
            if m["type"] == "http.request":
                self._keep(m.get("body", b""))
            return m

        doctor = self.doctor.get(scope["path"]) if scope["method"] == "GET" else None
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def snd(m: Any) -> None:
            if doctor is None:
                if m["type"] == "http.response.body":
                    self._keep(m.get("body", b""))
                await send(m)
                return
            if m["type"] == "http.response.start":
                start.update(m)
            elif m["type"] == "http.response.body":
                chunks.append(m.get("body", b""))
                if not m.get("more_body"):
                    body = json.dumps(doctor(json.loads(b"".join(chunks)))).encode()
                    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                    await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                    self._keep(body)
                    await send({"type": "http.response.body", "body": body})

        await self.app(scope, recv, snd)


@contextmanager
def served(settings: Settings) -> Iterator[tuple[str, Recorder]]:
    """The API under uvicorn on a free 127.0.0.1 port, in a thread (its logs go to the root logger)."""
    recorder = Recorder(create_app(settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(recorder, log_config=None, log_level="debug", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", recorder
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def executing(settings: Settings) -> Iterator[None]:
    """The bridge's executor over the outbox (the embedded broker, on PostgreSQL) in a thread."""
    from bridge.brokers.outbox import OutboxBroker
    from bridge.executor import Executor
    from service.db.session import session_factory
    from tests.bridge.helpers_bridge import InThread

    factory = session_factory(settings.sqlalchemy_url)
    with InThread(Executor(factory, OutboxBroker(factory), settings, poll_interval=0.05)):
        yield


class Admin:
    def __init__(self, url: str, settings: Settings) -> None:
        token = issue_token(settings, "admin", Role.ADMIN)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)

    def __call__(self, method: str, path: str, code: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        assert r.status_code == code, r.text
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.content

    def wait_job(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self("GET", f"/api/jobs/{job_id}/status")
            if st["status"] in ("COMPLETED", "FAILED"):
                return st
            assert time.monotonic() < deadline, st
            time.sleep(0.3)


def guardian_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AMARVOTE_")}
    return {**clean, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **extra}


def spawn(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``amarvote guardian ...`` as its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "guardian", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish(p: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out + err


def run(*args: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    return finish(spawn(*args, cwd=cwd, env=env), timeout)


class Guardian:
    """One guardian: its id, token, passphrase and folder (on 'its own machine')."""

    def __init__(self, gid: str, token: str, folder: Path) -> None:
        self.gid, self.token, self.folder = gid, token, folder
        self.passphrase = f"correct horse {gid} {uuid.uuid4().hex[:8]}"

    def env(self, passphrase: str | None = None) -> dict[str, str]:
        return guardian_env(AMARVOTE_GUARDIAN_PASSPHRASE=passphrase or self.passphrase)

    def init_args(self, url: str, election_id: int) -> list[str]:
        return [
            "init",
            "--api",
            url,
            "--election",
            str(election_id),
            "--guardian",
            self.gid,
            "--dir",
            str(self.folder),
        ]

    def init_env(self) -> dict[str, str]:
        return {**self.env(), "AMARVOTE_GUARDIAN_TOKEN": self.token}

    def private(self) -> PrivateGuardianRecord:
        sealed = json.loads((self.folder / "record.sealed.json").read_text())
        return PrivateGuardianRecord.from_json(json.loads(open_with_passphrase(sealed, self.passphrase)))


def start_ceremony(admin: Admin, tmp: Path, n: int, k: int, name: str) -> tuple[int, list[Guardian]]:
    e = admin(
        "POST",
        "/api/elections",
        201,
        json={"name": name, "number_of_guardians": n, "quorum": k, "candidate_names": ["A", "B", "C"]},
    )
    eid = e["election_id"]
    ids = [f"g{i + 1}" for i in range(n)]
    started = admin("POST", f"/api/elections/{eid}/ceremony", 201, json={"guardian_ids": ids})
    return eid, [
        Guardian(g["guardian_id"], g["token"], tmp / f"machine-{g['guardian_id']}")
        for g in started["guardians"]
    ]


def run_ceremony(url: str, eid: int, guardians: list[Guardian], tmp: Path) -> dict[str, str]:
    """Every guardian's ``init``, then every guardian's ``ceremony --wait``, each its own process, all at
    once; their outputs. Also checks no passphrase is on any process's command line while it runs."""
    outputs: dict[str, str] = {}
    procs = [(g, spawn(*g.init_args(url, eid), cwd=tmp, env=g.init_env())) for g in guardians]
    for g, p in procs:
        code, out = finish(p)
        assert code == 0, out
        outputs[g.gid] = out
    procs = [
        (
            g,
            spawn(
                "ceremony",
                "--dir",
                str(g.folder),
                "--wait",
                "--interval",
                "0.3",
                "--timeout",
                "300",
                cwd=tmp,
                env=g.env(),
            ),
        )
        for g in guardians
    ]
    for g, p in procs:
        cmdline = Path(f"/proc/{p.pid}/cmdline")
        if cmdline.exists():
            assert g.passphrase.encode() not in cmdline.read_bytes()
    for g, p in procs:
        code, out = finish(p)
        assert code == 0, out
        assert "is complete" in out, out
        outputs[g.gid] += out
    return outputs


def ballots(admin: Admin, eid: int, votes: list[str], spoiled: set[int]) -> None:
    for i, v in enumerate(votes):
        ballot = {
            "object_id": f"b{i}",
            "style_id": "ballot-style-1",
            "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": v, "vote": 1}]}],
        }
        body = {"ballot": ballot, "action": "spoil" if i in spoiled else "cast"}
        admin("POST", f"/api/elections/{eid}/ballots/encrypt", 201, json=body)


def secrets_of(guardians: list[Guardian]) -> list[int]:
    """Every secret of the ceremony, read from the guardians' folders: secret keys, coefficients, and every
    backup coordinate (those each sent, and those each received and opened)."""
    out: list[int] = []
    orders = []
    records = [g.private() for g in guardians]
    orders = [r.sequence_order for r in records]
    for r in records:
        keys = r.election_keys
        out.append(int(keys.key_pair.secret_key))
        out += [int(c.value) for c in keys.polynomial.coefficients]
        out += [int(compute_polynomial_coordinate(o, keys.polynomial)) for o in orders]
        for b in r.guardian_election_partial_key_backups.values():
            coordinate = b.decrypt(keys)
            assert coordinate is not None
            out.append(int(coordinate))
    return out
