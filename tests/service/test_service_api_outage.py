"""The API while PostgreSQL is away (reached through a TCP proxy the test cuts): every route that needs
the database answers 503 with ``Retry-After`` in the one error model, nothing is written, and the same
app answers normally once the database is back."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from fastapi.testclient import TestClient
from helpers_service import admin_headers, api_settings, row_counts
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from service.api.app import create_app
from service.api.errors import DATABASE_RETRY_AFTER
from tests.netproxy import Proxy


def _via(proxy: Proxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def _unavailable(r: Any) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == str(DATABASE_RETRY_AFTER)
    assert r.json() == {"detail": "the database is unreachable; nothing was changed: retry later"}


def test_database_outage_is_503_with_retry_after(db_url: str, engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    u = urlparse(db_url)
    with Proxy(u.hostname or "127.0.0.1", u.port or 5432) as proxy:
        settings = api_settings(_via(proxy, db_url), tmp_path)
        admin = admin_headers(settings)
        body = {"name": "Outage", "number_of_guardians": 1, "quorum": 1, "candidate_names": ["A", "B"]}
        with TestClient(create_app(settings)) as client:
            created = client.post("/api/elections", json=body, headers=admin)
            assert created.status_code == 201, created.text
            eid = created.json()["election_id"]
            before = row_counts(engine)

            proxy.cut()
            _unavailable(client.get("/api/elections", headers=admin))
            _unavailable(client.get(f"/api/elections/{eid}", headers=admin))
            _unavailable(client.post("/api/elections", json=body, headers=admin))
            _unavailable(client.post(f"/api/elections/{eid}/open", headers=admin))
            _unavailable(client.post("/api/tally/create", json={"election_id": eid}, headers=admin))
            _unavailable(client.get(f"/api/jobs?election_id={eid}", headers=admin))
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["database"] == "unreachable"
            # A scrape still answers (without the jobs-by-state samples the database would give).
            assert client.get("/metrics").status_code == 200
            assert row_counts(engine) == before  # nothing was written behind the refusals

            proxy.restore()
            again = client.get(f"/api/elections/{eid}", headers=admin)
            assert again.status_code == 200, again.text
            assert again.json()["state"] == "setup"
            assert client.get("/health").status_code == 200
