"""Ids that become names (``compute/ids.py``): a ballot or guardian id that could name another place
(a path with ``..`` or ``/``, a hidden file, a control character) is refused at every door of the API
with 422 naming the rule, against the real PostgreSQL, and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers_service import api_settings, row_counts
from sqlalchemy import Engine
from test_service_api import _encrypted, _new_election, _ok, _plaintext

from compute.ids import SAFE_ID
from service.settings import Settings

TRAVERSAL = "x/../../../../../../../../../../tmp/PWNED_cast"
UNSAFE = (TRAVERSAL, "../up", ".hidden", "a\\b", "tab\there", "new\nline", "sp ace", "é")


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(db_url, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def election(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    e = _new_election(client, admin, name="Untrusted ids")
    _ok(client.post(f"/api/elections/{e['election_id']}/open", headers=admin))
    return e


def _refused_naming_the_rule(
    client: TestClient, engine: Engine, url: str, body: dict[str, Any], admin
) -> None:  # type: ignore[no-untyped-def]
    before = row_counts(engine)
    r = client.post(url, json=body, headers=admin)
    assert r.status_code == 422, r.text
    assert SAFE_ID in r.json()["detail"], r.json()
    assert row_counts(engine) == before


def test_an_unsafe_ballot_id_is_422_naming_the_rule_at_submit_bulk_and_encrypt(
    client: TestClient, engine: Engine, admin: dict[str, str], election: dict[str, Any]
) -> None:
    url = f"/api/elections/{election['election_id']}/ballots"
    # One real ballot carrying the traversal id, valid in every other respect (its proofs included).
    evil = _encrypted(election, TRAVERSAL, 0)
    good = _encrypted(election, "fine-1", 1)
    _refused_naming_the_rule(client, engine, url, {"ballot": evil}, admin)
    _refused_naming_the_rule(
        client, engine, url + "/bulk", {"ballots": [{"ballot": good}, {"ballot": evil}]}, admin
    )
    for bad in UNSAFE:
        _refused_naming_the_rule(client, engine, url, {"ballot": {**good, "object_id": bad}}, admin)
        plain = _plaintext(election, bad, 0)
        for action in ("cast", "spoil", "pending"):
            _refused_naming_the_rule(
                client, engine, url + "/encrypt", {"ballot": plain, "action": action}, admin
            )
    # The ids this service and the reference make still pass.
    _ok(client.post(url, json={"ballot": good}, headers=admin), 201)
    _ok(
        client.post(
            url + "/encrypt", json={"ballot": _plaintext(election, "ballot-0000001", 2)}, headers=admin
        ),
        201,
    )


def test_an_unsafe_pending_ballot_id_in_a_path_is_422(
    client: TestClient, engine: Engine, admin: dict[str, str], election: dict[str, Any]
) -> None:
    url = f"/api/elections/{election['election_id']}/ballots"
    for bad in (".hidden", "a%5Cb", "sp%20ace", "-dash"):
        for decision in ("cast", "challenge"):
            before = row_counts(engine)
            r = client.post(f"{url}/{bad}/{decision}", headers=admin)
            assert r.status_code == 422, (bad, r.text)
            assert SAFE_ID in r.json()["detail"]
            assert row_counts(engine) == before


def test_an_unsafe_guardian_id_is_422_naming_the_rule(
    client: TestClient, engine: Engine, admin: dict[str, str]
) -> None:
    e = _ok(
        client.post(
            "/api/elections",
            json={"name": "Guardians", "number_of_guardians": 1, "quorum": 1, "candidate_names": ["A", "B"]},
            headers=admin,
        ),
        201,
    )
    url = f"/api/elections/{e['election_id']}/key-ceremony"
    for bad in ("../../tmp/PWNED_guardian", "g/1", ".g", "g\\1", "g 1"):
        _refused_naming_the_rule(client, engine, url, {"guardian_ids": [bad]}, admin)
        _refused_naming_the_rule(
            client,
            engine,
            "/api/decryption/create",
            {"election_id": e["election_id"], "guardian_id": bad, "credentials": "x", "passphrase": "p"},
            admin,
        )
    kc = _ok(
        client.post(
            url,
            json={"guardian_ids": ["guardian-1"]},
            headers=admin,
        )
    )
    assert kc["guardians"][0]["guardian_id"] == "guardian-1"


def test_openapi_declares_the_id_rule(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    text = str(doc)
    assert text.count(SAFE_ID) >= 3, "ballot ids, guardian ids and the ballot's object_id declare the rule"


def test_record_import_refuses_an_unsafe_guardian_id(engine: Engine, session: Any) -> None:
    from service.elections.imports import import_election
    from service.errors import Invalid
    from tests.compute.record_helpers import keys

    k = keys(guardians=2, quorum=2)
    records = [g.to_json() for g in k.records]
    records[1]["guardian_id"] = "../../../tmp/PWNED_guardian"
    before = row_counts(engine)
    with pytest.raises(Invalid, match="safe id"):
        import_election(
            session,
            name="imported",
            manifest=k.manifest.to_json(),
            context=k.context.to_json(),
            guardian_records=records,
        )
    session.rollback()
    assert row_counts(engine) == before


def test_the_export_refuses_a_stored_unsafe_id_and_verify_names_shared_codes(
    client: TestClient, engine: Engine, admin: dict[str, str], election: dict[str, Any], tmp_path: Any
) -> None:
    import dataclasses
    import io

    from sqlalchemy import select, text, update

    from service.db.models import Ballot
    from service.db.session import session_factory
    from service.elections import crypto
    from service.elections.results import write_record_dir, write_record_zip
    from service.errors import Conflict
    from service.jobs.verification import shared_codes

    eid = election["election_id"]
    url = f"/api/elections/{eid}/ballots"
    first = _ok(client.post(url, json={"ballot": _encrypted(election, "export-1", 0)}, headers=admin), 201)
    second = _ok(client.post(url, json={"ballot": _encrypted(election, "export-2", 1)}, headers=admin), 201)
    factory = session_factory(engine)
    # Two ballots sharing a tracking code: a database changed by hand, its unique index dropped (every
    # door computes the code itself, and the index refuses a repeat). PostgreSQL's DDL is transactional:
    # the rollback brings the index back for the other tests.
    with factory() as s:
        s.execute(text("DROP INDEX ux_ballot_election_code"))
        s.execute(
            update(Ballot)
            .where(Ballot.election_id == eid, Ballot.object_id == "export-2")
            .values(code=first["code"])
        )
        found = shared_codes(s, eid)
        s.rollback()
    assert found == [f"ballots export-1 and export-2 share the tracking code {first['code']}"], found
    assert second["code"] != first["code"]
    # A ballot stored before the rule, under a traversal id: the export stops, naming it.
    with factory.begin() as s:
        row = s.scalars(select(Ballot).where(Ballot.election_id == eid, Ballot.object_id == "export-2")).one()
        payload, _ = crypto.encode(dataclasses.replace(crypto.decode(row.payload), object_id=TRAVERSAL))
        row.object_id, row.payload = TRAVERSAL, payload
    out = tmp_path / "a" / "b" / "c"
    with factory() as s:
        with pytest.raises(Conflict, match="safe id"):
            write_record_dir(s, eid, out)
        with pytest.raises(Conflict, match="safe id"):
            write_record_zip(s, eid, io.BytesIO())
    assert not list(tmp_path.rglob("PWNED*"))
