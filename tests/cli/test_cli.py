"""The ``amarvote`` command as a user runs it: a subprocess with its own environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.run import DEMO_12, amarvote
from tests.raycluster import stale_current_cluster


def _secrets_in_folder(folder: Path) -> list[int]:
    """A demo guardian's secrets, read from its folder with its passphrase file: its election secret key,
    its polynomial's coefficients, the coordinates it sent, and the backups it received, opened."""
    from cli.guardian.folder import Folder, read_passphrase
    from compute.polynomial import compute_polynomial_coordinate

    f = Folder.open(folder)
    record = f.open_record(read_passphrase(folder / "passphrase.txt", new=False))
    keys = record.election_keys
    out = [int(keys.key_pair.secret_key)] + [int(c.value) for c in keys.polynomial.coefficients]
    out += [int(compute_polynomial_coordinate(i, keys.polynomial)) for i in range(1, 6)]
    for b in record.guardian_election_partial_key_backups.values():
        coordinate = b.decrypt(keys)
        assert coordinate is not None
        out.append(int(coordinate))
    return out


def _sqlite_dump(path: Path) -> str:
    """Every value of every row of every table of the SQLite database, as text (a blob also in hex)."""
    import sqlite3

    parts: list[str] = []
    with sqlite3.connect(path) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "election" in tables and "guardian" in tables, tables
        for t in tables:
            for row in c.execute(f'SELECT * FROM "{t}"'):
                for v in row:
                    parts.append(v.hex() + "\n" + v.decode("latin-1") if isinstance(v, bytes) else str(v))
    return "\n".join(parts)


def test_demo_runs_a_guardian_held_election_on_the_embedded_default(tmp_path: Path) -> None:
    """The default demo: each guardian's keys made and kept in its own folder (0700, files 0600) through
    ``amarvote guardian``'s functions against the API; the counts right, the record verifies, and no
    guardian secret anywhere in the database.

    Beside a stale ``/tmp/ray/ray_current_cluster`` too: the embedded default starts a local Ray of its
    own and never waits for the cluster the file names (``tests/cli/test_ray_cluster.py`` has the running
    cluster's case, on the custodial demo)."""
    from tests.secret_search import leaks

    out = tmp_path / "record"
    with stale_current_cluster():
        r = amarvote(
            "demo",
            *DEMO_12,
            "--out",
            str(out),
            cwd=tmp_path,
        )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "5 guardians (guardian-held)" in r.stdout, r.stdout[:2000]
    assert "counts equal the cast plaintexts; the record verifies, and so does the verify job" in r.stdout
    assert len(list((out / "election_record" / "spoiled_ballots").glob("*.json"))) == 3
    assert len(list((out / "election_record" / "submitted_ballots").glob("*.json"))) == 12
    # In this process (`--local`): the demo's own closing ran it on Ray, with the same units and closing.
    v = amarvote("record", "verify", "--local", str(out), cwd=tmp_path)
    assert v.returncode == 0 and "OK" in v.stdout, v.stdout + v.stderr
    # Each available guardian's decrypt step ran its checks and uploaded its shares.
    for g in (1, 2, 3):
        assert re.search(rf"guardian-{g} decrypt: checks [0-9.]+ s \(9 cast ballots\), shares", r.stdout)

    # The last lines: where the secrets are (every guardian's sealed record), the service never held them.
    last = " ".join(r.stdout.strip().splitlines()[-4:])
    assert "in each guardian's folder, sealed under its passphrase:" in last, last
    assert "the service never held them" in last, last
    started = re.search(r"election (\d+); guardians' folders in (\S+)", r.stdout)
    data = re.search(r"AMARVOTE_DATA_DIR=(\S+)", r.stdout)
    assert started and data, r.stdout[:3000]
    base = Path(started[2])
    assert base == (tmp_path / data[1] / f"election-{started[1]}-guardians").resolve()
    folders = sorted(base.iterdir())
    assert [f.name for f in folders] == [f"guardian-{i}" for i in range(1, 6)]
    for f in folders:
        assert str(f / "record.sealed.json") in last, last
        assert f.stat().st_mode & 0o777 == 0o700, f
        files = {x.name: x.stat().st_mode & 0o777 for x in f.iterdir()}
        assert files == dict.fromkeys(
            ["guardian.json", "public-key.json", "record.sealed.json", "passphrase.txt"]
            + (["decryption.json"] if f.name in ("guardian-1", "guardian-2", "guardian-3") else []),
            0o600,
        ), files

    # No guardian's secret key, coefficient or backup coordinate in any table, in hex or decimal.
    numbers = [x for f in folders for x in _secrets_in_folder(f)]
    assert len(numbers) == 5 * (1 + 3 + 5 + 4)
    db = tmp_path / data[1] / "amarvote.sqlite3"
    dumped = _sqlite_dump(db)
    assert str(started[1]) in dumped and len(dumped) > 100_000  # the election's rows, ballots included
    assert leaks(dumped, numbers) == []

    # A guardian-held run is started again, not resumed: refused before anything starts.
    again = amarvote(
        "demo", "--resume", started[1], "--seed", "1", cwd=tmp_path, env={"AMARVOTE_DATA_DIR": data[1]}
    )
    assert again.returncode == 2 and "--custodial" in again.stdout + again.stderr, again.stdout + again.stderr


@pytest.mark.services
def test_demo_runs_against_postgresql_and_rabbitmq(tmp_path: Path) -> None:
    """The same command with a database URL and an AMQP URL: outbox relay, RabbitMQ, bridge, local Ray."""
    from tests.conftest import new_database, new_vhost

    with new_database() as db, new_vhost() as amqp:
        env = {
            "AMARVOTE_DATABASE_URL": db,
            "AMARVOTE_AMQP_URL": amqp,
            "AMARVOTE_SERVER_SECRET": "cli-test-server-secret-0123456789",
        }
        r = amarvote(
            "demo",
            "--ballots",
            "10",
            "--guardians",
            "3",
            "--quorum",
            "2",
            "--missing",
            "1",
            cwd=tmp_path,
            env=env,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "services (RabbitMQ bridge, a local Ray)" in r.stdout
        assert "counts equal the cast plaintexts; the record verifies" in r.stdout
        assert not (tmp_path / "amarvote-data" / "amarvote.sqlite3").exists()


def test_demo_refuses_a_quorum_it_cannot_meet(tmp_path: Path) -> None:
    r = amarvote("demo", "--guardians", "3", "--quorum", "2", "--missing", "2", cwd=tmp_path)
    assert r.returncode == 2
    assert "missing" in (r.stdout + r.stderr)
    assert not (tmp_path / "amarvote-data").exists(), "a refused command changes nothing"


def test_token_and_jobs_commands(tmp_path: Path) -> None:
    env = {"AMARVOTE_DATA_DIR": str(tmp_path / "data")}
    assert amarvote("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    listed = amarvote("jobs", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    t = amarvote("token", "alice", cwd=tmp_path, env=env)
    assert t.returncode == 0 and t.stdout.count(".") == 2
    # Signed with the embedded default's own JWT secret, the one the API of this data directory checks.
    from service.security.auth import decode_token
    from service.settings import Settings

    assert (tmp_path / "data" / "jwt_secret.key").exists()
    assert decode_token(Settings(data_dir=tmp_path / "data"), t.stdout.strip()).subject == "alice"
    # A worker node's environment (a database URL and the server secret, no JWT secret) cannot sign.
    worker = {
        **env,
        "AMARVOTE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "AMARVOTE_SERVER_SECRET": "cli-test-server-secret-0123456789",
    }
    refused = amarvote("token", "mallory", cwd=tmp_path, env=worker)
    assert refused.returncode == 2 and "AMARVOTE_JWT_SECRET is not set" in refused.stdout, refused.stdout
    assert refused.stdout.count(".") < 2
    bad = amarvote("jobs", "show", "not-a-uuid", cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "not a job id" in bad.stdout


@pytest.fixture(autouse=True)
def _no_stray_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each subprocess starts (and stops) its own local Ray; never join the test session's.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_demo_resume_names_what_it_needs(tmp_path: Path) -> None:
    r = amarvote("demo", "--resume", "1", cwd=tmp_path)
    assert r.returncode == 2 and "AMARVOTE_DATA_DIR" in (r.stdout + r.stderr)
    r = amarvote("demo", "--resume", "1", cwd=tmp_path, env={"AMARVOTE_DATA_DIR": str(tmp_path / "d")})
    assert r.returncode == 2 and "--seed" in (r.stdout + r.stderr)
    assert not (tmp_path / "d").exists(), "a refused command changes nothing"
