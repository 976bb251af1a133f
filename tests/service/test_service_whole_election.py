"""The whole election through the API, with the bridge's embedded runner executing the jobs on a
local Ray against the real PostgreSQL: keys, cast and spoiled ballots, tally, 2-of-3 decryption with
one guardian missing (compensated), combine, results, and the exported record verified by
compute.verify. Slow-ish (Ray start-up): one test."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.conftest import TEST_JWT_SECRET, TEST_SERVER_SECRET


@pytest.fixture(scope="module")
def e2e_settings(
    db_url: str, tmp_path_factory: pytest.TempPathFactory, local_ray: None
) -> Iterator[Settings]:
    # Ray workers open the key escrow with the server secret of their own environment: the session's
    # one local Ray (tests/conftest.py) was started with TEST_SERVER_SECRET, so the app uses it too.
    yield Settings(
        database_url=db_url,
        data_dir=tmp_path_factory.mktemp("e2e"),
        server_secret=TEST_SERVER_SECRET,
        jwt_secret=TEST_JWT_SECRET,
        kdf_time_cost=1,
        kdf_memory_kib=1024,
        kdf_parallelism=1,
        job_rate_limit_per_minute=0,
        auto_migrate=False,
        max_in_flight=2,
        task_memory_mb=64,
    )


def _run(settings: Settings) -> None:
    from bridge.embedded import EmbeddedRunner

    EmbeddedRunner(settings, poll_interval=0.05).run_until_idle(timeout=300)


def _ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, r.text
    return r.json()


def test_whole_election(e2e_settings: Settings, tmp_path: Path) -> None:
    s = e2e_settings
    admin = {"Authorization": f"Bearer {issue_token(s, 'admin', Role.ADMIN)}"}
    pw = {"a": "passphrase of a", "b": "passphrase of b", "c": "passphrase of c"}
    with TestClient(create_app(s)) as client:
        e = _ok(
            client.post(
                "/api/elections",
                json={
                    "name": "E2E",
                    "number_of_guardians": 3,
                    "quorum": 2,
                    "candidate_names": ["Ann", "Ben", "Cy"],
                },
                headers=admin,
            ),
            201,
        )
        eid = e["election_id"]
        kc = _ok(
            client.post(
                f"/api/elections/{eid}/key-ceremony",
                json={"guardians": [{"guardian_id": g, "passphrase": p} for g, p in pw.items()]},
                headers=admin,
            )
        )
        creds = {g["guardian_id"]: g for g in kc["guardians"]}
        _ok(client.post(f"/api/elections/{eid}/open", headers=admin))
        votes = ["Ann", "Ben", "Ann", "Cy", "Ann"]  # the last one is spoiled
        for i, v in enumerate(votes):
            ballot = {
                "object_id": f"v{i}",
                "style_id": "ballot-style-1",
                "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": v, "vote": 1}]}],
            }
            action = "spoil" if i == len(votes) - 1 else "cast"
            _ok(
                client.post(
                    f"/api/elections/{eid}/ballots/encrypt",
                    json={"ballot": ballot, "action": action},
                    headers=admin,
                ),
                201,
            )
        _ok(client.post(f"/api/elections/{eid}/close", headers=admin))

        t = _ok(client.post("/api/tally/create", json={"election_id": eid, "chunk_size": 2}, headers=admin))
        _run(s)
        assert _ok(client.get(t["pollUrl"], headers=admin))["status"] == "COMPLETED"

        for g, missing in (("a", ["c"]), ("b", ["c"])):
            body = {
                "election_id": eid,
                "guardian_id": g,
                "credentials": creds[g]["credentials"],
                "passphrase": pw[g],
                "missing_guardian_ids": missing,
            }
            _ok(
                client.post(
                    "/api/decryption/create",
                    json=body,
                    headers={"Authorization": f"Bearer {creds[g]['token']}"},
                )
            )
        _run(s)
        status = _ok(client.get(f"/api/decryption/status?election_id={eid}", headers=admin))
        assert status["quorumMet"] and status["guardiansDecrypted"] == 2

        c = _ok(client.post("/api/combine/decryption", json={"election_id": eid}, headers=admin))
        _run(s)
        assert _ok(client.get(c["pollUrl"], headers=admin))["status"] == "COMPLETED"

        res = _ok(client.get(f"/api/elections/{eid}/results", headers=admin))
        counts = {sel["selection_id"]: sel["votes"] for sel in res["contests"][0]["selections"]}
        assert counts == {"Ann": 2, "Ben": 1, "Cy": 1}
        assert list(res["spoiled_ballots"]) == ["v4"]
        assert res["spoiled_ballots"]["v4"]["contest-1"]["Ann"] == 1
        assert sum(ch["counts"]["contest-1"]["Ann"] for ch in res["chunks"]) == 2

        r = client.get(f"/api/elections/{eid}/record", headers=admin)
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)

    from compute.record import read_record
    from compute.verify import verify_record

    record = read_record(tmp_path / "election_record")
    assert len(record.submitted_ballots) == 5 and list(record.spoiled_ballots) == ["v4"]
    assert set(record.lagrange_coefficients) == {"a", "b"}
    assert verify_record(record) == []
