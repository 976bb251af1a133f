"""The embedded default's generated secrets and database file (docs/invariants.md, rule 8): every reader
sees the whole secret, even while other processes are generating it; a short or empty secret file is
refused, naming the file; the data directory, the secrets and the SQLite file are the owner's only."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.security.secrets import (
    JWT_SECRET_FILE,
    MIN_SECRET_BYTES,
    SECRET_FILE,
    ConfigError,
    configured_fingerprint,
    jwt_key,
    server_secret,
)
from service.settings import Settings

PROCESSES = 6
DATA_DIRS = 10  # fresh data directories each process races on, one after the other
READS = 3  # reads of each secret per process and data directory

# A racer: for each data directory, waits until every racer has reached it (so that they all start on
# the fresh directory at once, as processes started together do), reads both secrets READS times, and
# prints each read's length and digest (never the secret).
RACER = """
import hashlib, json, os, sys, time
from pathlib import Path
from service.security.secrets import jwt_key, server_secret
from service.settings import Settings
root, reads, racers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
dirs = json.loads(sys.argv[4])
out = []
for d in dirs:
    s = Settings(data_dir=root / d)
    (root / f"at-{d}-{os.getpid()}").touch()
    while len(list(root.glob(f"at-{d}-*"))) < racers:
        time.sleep(0.0002)
    for _ in range(reads):
        for name, read in (("server", server_secret), ("jwt", jwt_key)):
            try:
                v = read(s)
                out.append([d, name, len(v), hashlib.sha256(v).hexdigest()])
            except Exception as exc:
                out.append([d, name, -1, type(exc).__name__])
print(json.dumps(out))
"""


@pytest.fixture()
def umask_022() -> Iterator[None]:
    # The usual umask, under which a file created with the default mode is 0644: a stricter one
    # (077) would make the mode checks pass whatever the code asks for.
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_text().strip().encode()).hexdigest()


def test_processes_racing_on_a_fresh_data_dir_read_one_whole_secret(tmp_path: Path, umask_022: None) -> None:
    dirs = [f"data-{i}" for i in range(DATA_DIRS)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env = {k: v for k, v in env.items() if not k.startswith("AMARVOTE_")}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), str(READS), str(PROCESSES), json.dumps(dirs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    reads = []
    for r in racers:
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
        reads += json.loads(out)

    assert len(reads) == PROCESSES * DATA_DIRS * READS * 2
    bad = [(d, name, n) for d, name, n, _ in reads if n < MIN_SECRET_BYTES]
    assert not bad, f"{len(bad)} of {len(reads)} reads saw a short or empty secret: {bad[:5]}"
    for d in dirs:
        files = {"server": tmp_path / d / SECRET_FILE, "jwt": tmp_path / d / JWT_SECRET_FILE}
        for name, f in files.items():
            seen = {digest for dd, nn, _, digest in reads if (dd, nn) == (d, name)}
            assert seen == {_digest(f)}, f"every process read the one {name} secret of {d}"
            assert f.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / d).stat().st_mode & 0o777 == 0o700
        assert sorted(p.name for p in (tmp_path / d).iterdir()) == sorted([SECRET_FILE, JWT_SECRET_FILE]), (
            "no temporary file left behind"
        )


@pytest.mark.parametrize("name", [SECRET_FILE, JWT_SECRET_FILE])
@pytest.mark.parametrize("content", ["", "\n", "short-but-not-empty-0123456789"])
def test_a_short_or_empty_generated_secret_is_refused_naming_the_file(
    tmp_path: Path, name: str, content: str
) -> None:
    (tmp_path / name).write_text(content)
    settings = Settings(data_dir=tmp_path)
    read = server_secret if name == SECRET_FILE else jwt_key
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / name))) as e:
        read(settings)
    assert not content.strip() or content.strip() not in str(e.value), "an error never quotes a secret"
    with pytest.raises(ConfigError, match=name):
        create_app(
            settings.model_copy(update={"kdf_time_cost": 1, "kdf_memory_kib": 1024, "kdf_parallelism": 1})
        )
    if name == SECRET_FILE:
        # The start-up probe's answer on a node: refused, not the fingerprint of an empty secret.
        with pytest.raises(ConfigError, match=name):
            configured_fingerprint(settings)
    assert (tmp_path / name).read_text() == content, "left as it was, for the operator to look at"


def test_the_embedded_default_keeps_its_data_dir_database_and_secrets_private(
    tmp_path: Path, umask_022: None
) -> None:
    data = tmp_path / "fresh"
    embedded = Settings(data_dir=data, kdf_time_cost=1, kdf_memory_kib=1024, kdf_parallelism=1)
    with TestClient(create_app(embedded)) as client:  # migrates the new SQLite file itself
        assert client.get("/health").json() == {"status": "ok", "database": "sqlite"}
        database = data / "amarvote.sqlite3"
        modes = {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()}
        assert modes[database.name] == 0o600, modes
        assert all(mode == 0o600 for mode in modes.values()), f"WAL and shared-memory files too: {modes}"
        assert {SECRET_FILE, JWT_SECRET_FILE, database.name} <= set(modes)
    assert data.stat().st_mode & 0o777 == 0o700


def test_the_start_up_probe_names_a_nodes_short_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node whose generated secret file is short answers the probe with why, naming the file, so the
    bridge refuses to start with that reason (not with advice to reinstall the project)."""
    from bridge.probe import _report

    (tmp_path / SECRET_FILE).write_text("short")
    monkeypatch.delenv("AMARVOTE_SERVER_SECRET", raising=False)
    monkeypatch.setenv("AMARVOTE_DATA_DIR", str(tmp_path))
    report = _report._function("node-1")  # the task's body, as a worker runs it with its own settings
    assert report.fingerprint is None
    assert report.secret_problem is not None and str(tmp_path / SECRET_FILE) in report.secret_problem
