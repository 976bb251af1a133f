"""Strict input against the real PostgreSQL: every value a column cannot hold (NUL, too long, beyond
BIGINT, the wrong type) is refused with 422 and the one error model, and changes nothing; oversized
bodies are refused with 413 before the token is read, and a bulk upload's larger limit is an admin's
only; the OpenAPI document declares what is returned."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from helpers_service import api_settings, row_counts
from sqlalchemy import Engine, create_engine, text
from test_service_api import _encrypted, _new_election, _ok, _plaintext

from service.api.app import create_app
from service.api.types import GUARDIAN_ID_MAX
from service.security.auth import ISSUER, Role, issue_token
from service.security.secrets import jwt_key
from service.settings import Settings

BIG = 2**63  # one past BIGINT


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(
        db_url,
        tmp_path_factory.mktemp("data"),
        max_body_bytes=256 * 1024,
        max_bulk_body_bytes=1024 * 1024,
    )


@pytest.fixture(scope="module")
def election(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    e = _new_election(client, admin, name="Input")
    _ok(client.post(f"/api/elections/{e['election_id']}/open", headers=admin))
    return e


def _refused(
    client: TestClient, engine: Engine, method: str, url: str, code: int = 422, **kw: Any
) -> dict[str, Any]:
    before = row_counts(engine)
    r = client.request(method, url, **kw)
    assert r.status_code == code, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"], body  # the one error model
    assert set(body) <= {"detail", "errors"}
    assert row_counts(engine) == before
    return body


def test_ids_beyond_bigint_are_422_in_paths_queries_and_bodies(
    client: TestClient, engine: Engine, admin: dict[str, str], election: dict[str, Any]
) -> None:
    for path in ("", "/manifest", "/context", "/guardians", "/results", "/record"):
        body = _refused(client, engine, "GET", f"/api/elections/{BIG}{path}", headers=admin)
        assert body["errors"][0]["loc"] == ["path", "election_id"]
    _refused(client, engine, "POST", f"/api/elections/{BIG}/open", headers=admin)
    _refused(client, engine, "GET", "/api/elections/0", headers=admin)
    _refused(client, engine, "GET", "/api/elections/-1", headers=admin)
    _refused(client, engine, "GET", f"/api/jobs?election_id={BIG}", headers=admin)
    _refused(client, engine, "GET", f"/api/decryption/status?election_id={BIG}", headers=admin)
    for url in ("/api/tally/create", "/api/combine/decryption"):
        _refused(client, engine, "POST", url, json={"election_id": BIG}, headers=admin)
    _refused(
        client,
        engine,
        "POST",
        "/api/decryption/create",
        json={"election_id": BIG, "guardian_id": "g1", "credentials": "x", "passphrase": "p"},
        headers=admin,
    )
    # The largest BIGINT is a well-formed id: simply no such election.
    _refused(client, engine, "GET", f"/api/elections/{BIG - 1}", 404, headers=admin)


def test_object_id_must_be_a_string(
    client: TestClient, engine: Engine, admin: dict[str, str], election: dict[str, Any]
) -> None:
    url = f"/api/elections/{election['election_id']}/ballots"
    ballot = _encrypted(election, "typed-0", 0)
    for bad in (7, None, ["a"], {"a": 1}, "", "x" * 201, "nul\x00id"):
        _refused(client, engine, "POST", url, json={"ballot": {**ballot, "object_id": bad}}, headers=admin)
        _refused(
            client,
            engine,
            "POST",
            url + "/bulk",
            json={"ballots": [{"ballot": ballot}, {"ballot": {**ballot, "object_id": bad}}]},
            headers=admin,
        )
        plain = {**_plaintext(election, "typed-1", 0), "object_id": bad}
        _refused(client, engine, "POST", url + "/encrypt", json={"ballot": plain}, headers=admin)
    # A ballot without an object_id at all is refused the same way.
    _refused(client, engine, "POST", url, json={"ballot": {"style_id": "s"}}, headers=admin)


def test_nul_bytes_are_refused(
    client: TestClient, engine: Engine, admin: dict[str, str], election: dict[str, Any]
) -> None:
    eid = election["election_id"]
    base = {"name": "N", "number_of_guardians": 1, "quorum": 1, "candidate_names": ["A", "B"]}
    _refused(client, engine, "POST", "/api/elections", json={**base, "name": "a\x00b"}, headers=admin)
    _refused(
        client,
        engine,
        "POST",
        "/api/elections",
        json={**base, "candidate_names": ["A", "\x00"]},
        headers=admin,
    )
    _refused(
        client, engine, "POST", "/api/elections", json={**base, "party_names": ["x\x00", "y"]}, headers=admin
    )
    _refused(client, engine, "GET", f"/api/elections/{eid}/ballots/a%00b", headers=admin)
    _refused(client, engine, "POST", f"/api/elections/{eid}/ballots/a%00b/cast", headers=admin)
    setup = _ok(client.post("/api/elections", json=base, headers=admin), 201)
    _refused(
        client,
        engine,
        "POST",
        f"/api/elections/{setup['election_id']}/key-ceremony",
        json={"guardian_ids": ["g\x001"]},
        headers=admin,
    )
    # A NUL deep inside a free-form JSON document reaches PostgreSQL, which refuses it: the data-error
    # handler answers 422 with a reason, and the transaction has rolled back.
    manifest = _ok(client.get(f"/api/elections/{setup['election_id']}/manifest", headers=admin))["manifest"]
    manifest["name"] = {"text": [{"value": "bad\x00name", "language": "en"}]}
    body = _refused(
        client,
        engine,
        "PUT",
        f"/api/elections/{setup['election_id']}/manifest",
        json={"manifest": manifest},
        headers=admin,
    )
    assert "NUL" in body["detail"] or "manifest" in body["detail"], body


def test_a_guardian_id_must_fit_its_token_subject(
    client: TestClient, engine: Engine, admin: dict[str, str], settings: Settings
) -> None:
    e = _ok(
        client.post(
            "/api/elections",
            json={"name": "Long", "number_of_guardians": 1, "quorum": 1, "candidate_names": ["A", "B"]},
            headers=admin,
        ),
        201,
    )
    url = f"/api/elections/{e['election_id']}/key-ceremony"
    too_long = "g" * (GUARDIAN_ID_MAX + 1)
    _refused(
        client,
        engine,
        "POST",
        url,
        json={"guardian_ids": [too_long]},
        headers=admin,
    )
    # The longest accepted id still makes a subject that created_by (VARCHAR(128)) holds, with the
    # largest election id there can be.
    longest = "g" * GUARDIAN_ID_MAX
    assert len(f"guardian:{2**63 - 1}:{longest}") <= 128
    kc = _ok(client.post(url, json={"guardian_ids": [longest]}, headers=admin))
    assert kc["guardians"][0]["guardian_id"] == longest
    _refused(
        client,
        engine,
        "POST",
        "/api/decryption/create",
        json={
            "election_id": e["election_id"],
            "guardian_id": too_long,
            "credentials": "x",
            "passphrase": "p",
        },
        headers=admin,
    )


def test_oversized_body_is_413_before_the_token(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    big = b'{"election_id": 1, "pad": "' + b"x" * (settings.max_body_bytes + 1) + b'"}'
    headers = {"content-type": "application/json"}
    # No token at all: 413, not the 401 that reading and parsing the body first would give.
    body = _refused(client, engine, "POST", "/api/tally/create", 413, content=big, headers=headers)
    assert "AMARVOTE_MAX_BODY_BYTES" in body["detail"]

    # Without a Content-Length (a streamed, chunked body) the bytes are counted as they arrive.
    def chunks() -> Iterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    _refused(client, engine, "POST", "/api/elections", 413, content=chunks(), headers=headers)
    # Under the limit the same unauthenticated request is read and refused for its token.
    _refused(client, engine, "POST", "/api/tally/create", 401, json={"election_id": 1})


def test_a_bulk_body_above_the_default_is_read_only_from_an_admin(
    client: TestClient, engine: Engine, settings: Settings, admin: dict[str, str]
) -> None:
    url = "/api/elections/1/ballots/bulk"
    # Not JSON, and above the default limit: a route that read it would answer 422.
    big = b"{" + b"x" * (settings.max_body_bytes + 1)
    plain = {"content-type": "application/json"}
    token = issue_token(settings, "g", Role.GUARDIAN, election_id=1, guardian_id="g1")
    guardian = {"Authorization": f"Bearer {token}"}
    # Refused on its Content-Length for what the token lacks, without a byte read.
    body = _refused(client, engine, "POST", url, 401, content=big, headers=plain)
    assert "bearer token is required" in body["detail"] and "AMARVOTE_MAX_BODY_BYTES" in body["detail"]
    _refused(client, engine, "POST", url, 401, content=big, headers={**plain, "Authorization": "Bearer nope"})
    _refused(client, engine, "POST", url, 403, content=big, headers={**plain, **guardian})

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    _refused(client, engine, "POST", url, 401, content=chunks(), headers=plain)
    # An admin's body is read up to the bulk limit (here: found not to be JSON), and refused above it.
    _refused(client, engine, "POST", url, 422, content=big, headers={**plain, **admin})
    _refused(client, engine, "POST", url, 422, content=chunks(), headers={**plain, **admin})
    bigger = b"[" + b" " * settings.max_bulk_body_bytes + b"]"
    _refused(client, engine, "POST", url, 413, content=bigger, headers={**plain, **admin})
    # Under the default limit nothing changes: the route reads the body, then checks the token.
    _refused(client, engine, "POST", url, 401, json={"ballots": []})


def test_openapi_declares_the_error_model_everywhere(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if not path.startswith("/api/"):
                continue
            for code in ("401", "403", "404", "409", "413", "422", "429", "503"):
                schema = op["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
            assert "Retry-After" in op["responses"]["503"]["headers"], (method, path)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")


def test_a_token_subject_longer_than_its_column_is_refused(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    # The subject is written as created_by (VARCHAR(128)): minting refuses it, and a token made
    # elsewhere with the same key is refused at the door, before anything is written.
    with pytest.raises(ValueError, match="subject"):
        issue_token(settings, "a" * 200, Role.ADMIN)
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "a" * 200, "role": "admin", "iat": now, "exp": now + 60}
    long_admin = {"Authorization": f"Bearer {jwt.encode(claims, jwt_key(settings), settings.jwt_algorithm)}"}
    body = {"name": "Overflow", "number_of_guardians": 1, "quorum": 1, "candidate_names": ["A", "B"]}
    detail = _refused(client, engine, "POST", "/api/elections", 401, json=body, headers=long_admin)["detail"]
    assert "subject" in detail


def test_a_value_the_database_refuses_is_422_and_rolled_back(settings: Settings) -> None:
    # Whatever input checks miss and PostgreSQL refuses as data (here a cast) answers 422 with a
    # fixed reason, never the database's message (it can quote the value).
    app = create_app(settings)
    probe = create_engine(settings.sqlalchemy_url)

    def refused_by_the_database() -> None:
        with probe.begin() as conn:
            conn.execute(text("SELECT CAST('not a number' AS integer)"))

    app.add_api_route("/test/data-error", refused_by_the_database)
    try:
        with TestClient(app) as c:
            r = c.get("/test/data-error")
    finally:
        probe.dispose()
    assert r.status_code == 422, r.text
    assert "not a number" not in r.text and r.json()["detail"]
