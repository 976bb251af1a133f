"""The demo's guardian-held election (its default): the API served in this process on a free 127.0.0.1
port, the administrator's steps as HTTP requests with an admin token, and each simulated guardian doing
its side through ``amarvote guardian``'s own functions (``init_folder``, ``Ceremony.step``,
``Decryption.prepare``) with its own token, its own folder and its own passphrase. The service sees
public keys, encrypted backups, proofs and shares only; the guardians' secrets stay in their folders.

Served over real HTTP (uvicorn in a thread), not an in-process transport: the guardian's client is the
one a guardian on another machine runs, unchanged, and every request crosses the same body limits,
token checks and JSON encoding; on the loopback a request costs about a millisecond, a few hundred of
them in a small demo.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from pydantic import SecretStr

from cli.guardian import init_folder
from cli.guardian.api import Api
from cli.guardian.ceremony import Ceremony
from cli.guardian.decrypt import Decryption
from cli.guardian.folder import Folder, read_passphrase, write_private
from cli.ui import console
from service.settings import Settings

PASSPHRASE_FILE = "passphrase.txt"
CEREMONY_ROUNDS = 20  # a five-round ceremony: more means it is stuck


def api_settings(settings: Settings) -> Settings:
    """The in-process API's settings: with a database URL and no JWT secret (a worker's environment), a
    key of this run's own; the tokens it signs are only ever shown to this run's API."""
    if settings.database_url is not None and settings.jwt_secret is None:
        return settings.model_copy(update={"jwt_secret": SecretStr(secrets.token_urlsafe(32))})
    return settings


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The API (as ``amarvote serve`` builds it) under uvicorn on a free 127.0.0.1 port, in a thread."""
    import uvicorn

    from cli.api import app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app(settings), log_config=None, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="amarvote-api", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo's API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class Admin:
    """The administrator's side: the same API, an admin token."""

    def __init__(self, url: str, token: str) -> None:
        self.api = Api(url, token, timeout=600)

    def __call__(self, method: str, path: str, **body: Any) -> Any:
        return self.api.call(method, path, json=body)

    def close(self) -> None:
        self.api.close()


@dataclass
class SimulatedGuardian:
    guardian_id: str
    folder: Folder

    @property
    def passphrase_file(self) -> Path:
        return self.folder.path / PASSPHRASE_FILE

    def passphrase(self) -> str:
        return read_passphrase(self.passphrase_file, new=False)

    def api(self) -> Api:
        return Api(self.folder.config["api_url"], self.folder.config["token"])


def guardians_dir(settings: Settings, eid: int) -> Path:
    return Path(settings.data_dir).resolve() / f"election-{eid}-guardians"


def init_guardians(url: str, eid: int, started: dict[str, Any], base: Path) -> list[SimulatedGuardian]:
    """Each guardian's ``init``: its keys made and sealed in ``base/<id>`` (0700) under a passphrase
    generated for it and, this being a demo, written beside them (``passphrase.txt``, 0600)."""
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = []
    for slot in started["guardians"]:
        gid, path = slot["guardian_id"], base / slot["guardian_id"]
        passphrase = secrets.token_urlsafe(24)
        api, token = Api(url, slot["token"]), slot["token"]
        folder, _ = init_folder(api, path, eid, gid, token, functools.partial(str, passphrase))
        api.close()
        write_private(folder.path / PASSPHRASE_FILE, (passphrase + "\n").encode())
        out.append(SimulatedGuardian(gid, folder))
    return out


def run_ceremony(guardians: list[SimulatedGuardian]) -> None:
    """Every guardian's ``ceremony`` steps (``Ceremony.step``, what ``amarvote guardian ceremony`` runs),
    one guardian after the other, round after round, until the service says the ceremony is complete
    (each guardian's record opened from its folder with its passphrase file, as the command does)."""
    ceremonies = []
    for g in guardians:
        passphrase = g.passphrase()
        record = g.folder.open_record(passphrase)
        ceremonies.append(Ceremony(g.api(), g.folder, record, passphrase, lambda _text: None))
    for _ in range(CEREMONY_ROUNDS):
        states = []
        for c in ceremonies:
            states.append(c.step()["state"])
            if states[-1] == "complete":  # the ceremony's state: every guardian has confirmed
                return
    raise RuntimeError(f"the key ceremony is not complete after {CEREMONY_ROUNDS} rounds: {states}")


@dataclass(frozen=True)
class GuardianTimings:
    guardian_id: str
    checks: float
    shares: float
    cast: int
    units: int
    peak_rss_mb: float | None


def decrypt(g: SimulatedGuardian, bar: Any) -> tuple[list[str], GuardianTimings]:
    """One available guardian's ``decrypt`` up to its submission (``Decryption.prepare``): the checks,
    its shares and compensated shares computed here, uploaded, submitted; its jobs and timings (and the
    peak resident memory of this process meanwhile, sampled every 50 ms)."""
    record = g.folder.open_record(g.passphrase())
    before = set(bar.task_ids)
    d = Decryption(g.api(), g.folder, record, bar, lambda _text: None)
    with _peak_rss() as peak:
        jobs = d.prepare(workers=1)
    for task in set(bar.task_ids) - before:  # its bars, summed up in one line below
        bar.remove_task(task)
    t = d.timings
    return jobs, GuardianTimings(g.guardian_id, t.checks, t.shares, t.cast, t.units, peak.get("mb"))


@contextmanager
def _peak_rss() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with Ray
        yield out
        return
    proc, stop = psutil.Process(os.getpid()), threading.Event()
    peak = [proc.memory_info().rss]

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield out
    finally:
        stop.set()
        t.join()
        out["mb"] = max(peak[0], proc.memory_info().rss) / 2**20


def print_secrets(guardians: list[SimulatedGuardian]) -> None:
    """Where the guardians' secrets are: the demo's last lines."""
    paths = ", ".join(str(g.folder.path / "record.sealed.json") for g in guardians)
    console.print(
        "guardians' secrets (guardian-held): in each guardian's folder, sealed under its passphrase:"
        f" {paths}; the service never held them",
        soft_wrap=True,
    )
    console.print(
        f"  (a demo: each guardian's generated passphrase is in its folder's {PASSPHRASE_FILE}, 0600; a"
        " real guardian keeps it elsewhere, or types it)",
        soft_wrap=True,
    )


def refuse_resume(eid: int) -> typer.BadParameter:
    return typer.BadParameter(
        f"election {eid} is guardian-held: --resume continues --custodial demo runs only; start the"
        " guardian-held demo again (each guardian's own `amarvote guardian ceremony` / `decrypt --dir"
        " <its folder>` do continue where they stopped)",
        param_hint="--resume",
    )
