"""The KDF of ``POST /api/decryption/create``: parameters beyond the bounds are refused before any argon2
work, argon2 runs with no database connection checked out, at most ``kdf_concurrency`` at once, and a
request that finds every slot busy gets a 503 with ``Retry-After`` and changes nothing."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers_service import complete_tally, custodial_keys, row_counts
from sqlalchemy import Engine, select

from compute import sealing  # the passphrase format (and its KDF) lives in compute/sealing.py
from service.api.app import create_app
from service.db.models import ElectionJob, GuardianKeyEscrow
from service.db.session import transaction
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.conftest import TEST_JWT_SECRET, TEST_SERVER_SECRET

pytestmark = pytest.mark.services

PASSPHRASE = "the only guardian's passphrase"
URL = "/api/decryption/create"


def _settings(db_url: str, data_dir: Any, **overrides: Any) -> Settings:
    return Settings(
        **{
            "database_url": db_url,
            "data_dir": data_dir,
            "server_secret": TEST_SERVER_SECRET,
            "jwt_secret": TEST_JWT_SECRET,
            "kdf_time_cost": 1,
            "kdf_memory_kib": 1024,
            "kdf_parallelism": 1,
            "job_rate_limit_per_minute": 10_000,
            "auto_migrate": False,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _settings(db_url, tmp_path_factory.mktemp("kdf"))


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, r.text
    return r.json()


def _tallied_election(client: TestClient, settings: Settings, engine: Engine) -> dict[str, Any]:
    """One guardian, two ballots, the tally job marked COMPLETED (the bridge is not running here)."""
    admin = {"Authorization": f"Bearer {issue_token(settings, 'admin', Role.ADMIN)}"}
    e = _ok(
        client.post(
            "/api/elections",
            json={"name": "kdf", "number_of_guardians": 1, "quorum": 1, "candidate_names": ["Yes", "No"]},
            headers=admin,
        ),
        201,
    )
    eid = e["election_id"]
    kc = custodial_keys(client, admin, eid, {"solo": PASSPHRASE})
    _ok(client.post(f"/api/elections/{eid}/open", headers=admin))
    for i in range(2):
        ballot = {
            "object_id": f"b{i}",
            "style_id": "ballot-style-1",
            "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": "Yes", "vote": i}]}],
        }
        _ok(client.post(f"/api/elections/{eid}/ballots/encrypt", json={"ballot": ballot}, headers=admin), 201)
    _ok(client.post(f"/api/elections/{eid}/close", headers=admin))
    tally = _ok(client.post("/api/tally/create", json={"election_id": eid}, headers=admin))
    complete_tally(engine, tally["jobId"])
    g = kc["guardians"][0]
    return {
        "election_id": eid,
        "body": {
            "election_id": eid,
            "guardian_id": "solo",
            "credentials": g["credentials"],
            "passphrase": PASSPHRASE,
        },
        "auth": {"Authorization": f"Bearer {g['token']}"},
    }


def _partial_jobs(engine: Engine, eid: int) -> list[ElectionJob]:
    with transaction(engine) as s:
        return list(
            s.scalars(
                select(ElectionJob).where(
                    ElectionJob.election_id == eid, ElectionJob.operation_type == "PARTIAL_DECRYPTION"
                )
            )
        )


def _watch_kdf(monkeypatch: pytest.MonkeyPatch, during: Callable[[], None]) -> list[int]:
    """Run ``during`` inside every argon2 call of the credential files; the list counts the calls."""
    real = sealing.hash_secret_raw
    calls: list[int] = []

    def watched(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        during()
        return real(*args, **kwargs)

    monkeypatch.setattr(sealing, "hash_secret_raw", watched)
    return calls


BOUNDS = "this server opens at most time_cost 6, memory_cost 262144 KiB, parallelism 4"


@pytest.mark.parametrize(
    ("kdf", "reason"),
    [
        ({"memory_cost": 1 << 20}, BOUNDS),  # 1 GiB: what the old bound allowed
        ({"memory_cost": sealing.MAX_KDF_MEMORY_KIB + 1}, BOUNDS),
        ({"time_cost": sealing.MAX_KDF_TIME_COST + 1}, BOUNDS),
        ({"parallelism": sealing.MAX_KDF_PARALLELISM + 1}, BOUNDS),
        ({"memory_cost": 8, "parallelism": 2}, BOUNDS),  # under 8 KiB a lane: argon2 itself would fail
        ({"time_cost": "3"}, "malformed"),
        ({"version": 16}, "unknown KDF"),
    ],
)
def test_oversized_kdf_parameters_are_refused_before_any_kdf(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    kdf: dict[str, Any],
    reason: str,
) -> None:
    e = _tallied_election(client, settings, engine)
    calls = _watch_kdf(monkeypatch, lambda: pytest.fail("argon2 ran for a credential file it should refuse"))
    hostile = copy.deepcopy(e["body"])
    hostile["credentials"]["kdf"].update(kdf)
    before = row_counts(engine)
    r = client.post(URL, json=hostile, headers=e["auth"])
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]
    assert calls == [] and row_counts(engine) == before
    # The genuine file still opens (the KDF does run for it): the refusal was the parameters'.
    monkeypatch.undo()
    _ok(client.post(URL, json=e["body"], headers=e["auth"]))


def test_the_kdf_runs_with_no_database_connection_checked_out(
    client: TestClient, settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = _tallied_election(client, settings, engine)
    api_engine: Engine = client.app.state.ctx.engine  # type: ignore[attr-defined]
    seen: list[int] = []
    calls = _watch_kdf(monkeypatch, lambda: seen.append(api_engine.pool.checkedout()))
    created = _ok(client.post(URL, json=e["body"], headers=e["auth"]))
    assert calls == [1] and seen == [0], f"connections checked out during the KDF: {seen}"
    assert created["status"] == "QUEUED" and created["totalChunks"] == 1  # the aggregate, one slice
    with transaction(engine) as s:
        assert s.scalar(select(GuardianKeyEscrow.id).where(GuardianKeyEscrow.election_id == e["election_id"]))


def test_at_most_kdf_concurrency_run_at_once_and_the_state_is_checked_again(
    db_url: str, tmp_path: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six simultaneous requests for one guardian: all pass the read phase before any job exists, at most
    two are in the KDF at any time, and the write phase, checking again, lets exactly one create a job."""
    s = _settings(db_url, tmp_path, kdf_concurrency=2, kdf_wait_seconds=60.0)
    lock = threading.Lock()
    running, peak = [0], [0]

    def busy() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.5)
        with lock:
            running[0] -= 1

    with TestClient(create_app(s)) as client:
        e = _tallied_election(client, s, engine)
        calls = _watch_kdf(monkeypatch, busy)
        start = threading.Barrier(6)

        def post(_: int) -> int:
            start.wait()
            return client.post(URL, json=e["body"], headers=e["auth"]).status_code

        with ThreadPoolExecutor(6) as pool:
            codes = sorted(pool.map(post, range(6)))
    assert peak[0] == 2, f"{peak[0]} KDF runs at once with kdf_concurrency=2"
    assert len(calls) == 6, "every request passed the read phase before the first job was written"
    assert codes == [200] + [409] * 5
    assert len(_partial_jobs(engine, e["election_id"])) == 1


def test_every_slot_busy_is_503_with_retry_after_and_changes_nothing(
    db_url: str, tmp_path: Any, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = _settings(db_url, tmp_path, kdf_concurrency=1, kdf_wait_seconds=0.2)
    with TestClient(create_app(s)) as client:
        e = _tallied_election(client, s, engine)
        calls = _watch_kdf(monkeypatch, lambda: None)
        before = row_counts(engine)
        with client.app.state.ctx.kdf_gate.slot():  # type: ignore[attr-defined]
            r = client.post(URL, json=e["body"], headers=e["auth"])
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert "credential-opening slots are busy" in r.json()["detail"]
        assert calls == [] and row_counts(engine) == before
        # Once the slot is free the same request goes through.
        _ok(client.post(URL, json=e["body"], headers=e["auth"]))
        assert calls == [1]


def test_openapi_declares_the_503(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"][URL]["post"]["responses"]
    assert "Retry-After" in responses["503"]["headers"]
    assert {"403", "409", "422"} <= set(responses)


def test_server_kdf_settings_stay_within_the_bounds() -> None:
    from pydantic import ValidationError

    for field, value in (
        ("kdf_memory_kib", sealing.MAX_KDF_MEMORY_KIB + 1),
        ("kdf_time_cost", sealing.MAX_KDF_TIME_COST + 1),
        ("kdf_parallelism", sealing.MAX_KDF_PARALLELISM + 1),
    ):
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: value})
    most = Settings(kdf_memory_kib=sealing.MAX_KDF_MEMORY_KIB, kdf_time_cost=6, kdf_parallelism=4)
    sealing.KdfParams(most.kdf_time_cost, most.kdf_memory_kib, most.kdf_parallelism).check()
