"""A challenged ballot checked by the reference electionguard 1.4.0, as a voter's verifier would: given
the nonce and plaintext the API returned, the reference re-encrypts the ballot to the same ciphertexts and
proofs, decrypts the challenged ballot with the nonce to the same votes, and finds it valid."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cli.demo import demo_manifest
from service.api.app import create_app
from service.db import migrate
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.oracle import require_oracle, run_oracle

pytestmark = [pytest.mark.interop, pytest.mark.services]

STYLE = "harrison-township-ballot-style"  # both contests of the demo manifest


@pytest.fixture(scope="module")
def api(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    require_oracle()
    migrate.upgrade(pg_url)
    settings = Settings(
        database_url=pg_url,
        data_dir=tmp_path_factory.mktemp("data"),
        server_secret="test-server-secret-0123456789abcdef",
        jwt_secret="test-jwt-secret-0123456789abcdef",
        kdf_time_cost=1,
        kdf_memory_kib=1024,
        kdf_parallelism=1,
        auto_migrate=False,
    )
    with TestClient(create_app(settings)) as client:
        yield client, {"Authorization": f"Bearer {issue_token(settings, 'admin', Role.ADMIN)}"}


def _ok(r, code: int = 200) -> Any:  # type: ignore[no-untyped-def]
    assert r.status_code == code, r.text
    return r.json()


def _votes(manifest: dict[str, Any], plaintext: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Every selection of the style's contests, 0 where the plaintext names none (as decryption gives)."""
    given = {
        c["object_id"]: {s["object_id"]: s["vote"] for s in c["ballot_selections"]}
        for c in plaintext["contests"]
    }
    votes: dict[str, dict[str, int]] = {}
    for c in manifest["contests"]:
        chosen = given.get(c["object_id"], {})
        ids = [s["object_id"] for s in c["ballot_selections"]]
        votes[c["object_id"]] = {sid: chosen.get(sid, 0) for sid in ids}
    return votes


PLAINTEXTS = [
    (
        "pending",
        {
            "object_id": "challenged-later",
            "style_id": STYLE,
            "contests": [
                {
                    "object_id": "justice-supreme-court",
                    "ballot_selections": [
                        {"object_id": "john-adams-selection", "vote": 1},
                        {"object_id": "write-in-selection", "vote": 1, "write_in": "Abigail Adams"},
                    ],
                }
            ],
        },
    ),
    (
        "spoil",
        {
            "object_id": "challenged-at-once",
            "style_id": STYLE,
            "contests": [
                {
                    "object_id": "justice-supreme-court",
                    "ballot_selections": [{"object_id": "john-hancock-selection", "vote": 1}],
                },
                {
                    "object_id": "referendum-pineapple",
                    "ballot_selections": [
                        {"object_id": "referendum-pineapple-negative-selection", "vote": 1}
                    ],
                },
            ],
        },
    ),
]


def test_the_reference_checks_a_challenged_ballot_with_its_opening(
    api: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    client, admin = api
    body = {"name": "Interop challenge", "number_of_guardians": 2, "quorum": 2, "manifest": demo_manifest()}
    eid = _ok(client.post("/api/elections", json=body, headers=admin), 201)["election_id"]
    _ok(client.post(f"/api/elections/{eid}/key-ceremony", json={"guardian_ids": ["g1", "g2"]}, headers=admin))
    _ok(client.post(f"/api/elections/{eid}/open", headers=admin))
    manifest = _ok(client.get(f"/api/elections/{eid}/manifest", headers=admin))["manifest"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "context.json").write_text(
        json.dumps(_ok(client.get(f"/api/elections/{eid}/context", headers=admin)))
    )
    url = f"/api/elections/{eid}/ballots"
    for action, plaintext in PLAINTEXTS:
        body = {"ballot": plaintext, "action": action}
        r = _ok(client.post(f"{url}/encrypt", json=body, headers=admin), 201)
        if action == "pending":
            r = _ok(client.post(r["challenge_url"], headers=admin), 201)
        assert r["state"] == "spoiled"
        stored = _ok(client.get(f"{url}/{plaintext['object_id']}", headers=admin))
        assert stored == r["ballot"]
        paths = []
        for name, doc in (("ballot", stored), ("plaintext", r["plaintext"])):
            paths.append(tmp_path / f"{plaintext['object_id']}-{name}.json")
            paths[-1].write_text(json.dumps(doc))
        out = run_oracle(
            "challenge_ballot.py", tmp_path / "manifest.json", tmp_path / "context.json", *paths, r["nonce"]
        )
        # The service keeps no extended_data (no hash covers it; docs/invariants.md, rule 12): all else
        # is the reference's re-encryption, byte for byte.
        assert all(c["extended_data"] is not None for c in out["reencrypted"]["contests"])
        for c in out["reencrypted"]["contests"]:
            c["extended_data"] = None
        assert out["reencrypted"] == stored, plaintext["object_id"]
        assert out["decrypted"] == _votes(manifest, plaintext)
        assert out["valid"] is True
