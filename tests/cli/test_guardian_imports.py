"""``amarvote guardian`` runs on a guardian's own machine: it talks to the API only, so running it loads none
of the service's code (no database, broker, Ray, web framework), while ``amarvote`` itself still offers
every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_SIDE = {"service", "bridge", "sqlalchemy", "psycopg", "pika", "ray", "fastapi", "alembic", "uvicorn"}


def _loaded(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMARVOTE_")}
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cli", *args],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    roots = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in r.stderr.splitlines()
        if line.startswith("import time:")
    }
    return r, roots


def test_the_guardian_command_loads_no_service_code() -> None:
    for args in (("guardian", "--help"), ("--debug", "guardian", "status", "--help")):
        r, roots = _loaded(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "compute" in roots  # the guardian's arithmetic is loaded, so the list is real
        assert not roots & SERVICE_SIDE, sorted(roots & SERVICE_SIDE)


def test_the_amarvote_command_still_offers_every_command() -> None:
    r, _roots = _loaded("--help")
    assert r.returncode == 0, r.stdout + r.stderr
    for command in ("demo", "serve", "bridge", "db", "jobs", "record", "guardian"):
        assert command in r.stdout, command
