"""The guardian-held (remote) key ceremony through the API on PostgreSQL: each guardian's steps are made by
test code with its own key material (compute/ceremony.py), the service sees public data only, and the
election it makes is one the custodial ceremony would have made (reference-compatible context and guardian
records; ballots accepted; a quorum of guardians decrypts their tally, compensating for the missing)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers_service import api_settings
from sqlalchemy import Engine

from compute.ballot import BallotBoxState, PlaintextBallot
from compute.ceremony import (
    backups_for,
    check_published_context,
    expected_context,
    make_confirmation,
    make_guardian_keys,
    verify_received_backups,
)
from compute.constants import Q
from compute.context import ElectionContext
from compute.decrypt_with_shares import decrypt_with_guardians
from compute.encrypt import encrypt_ballot, submit
from compute.group import from_hex
from compute.guardian import (
    ElectionKeyPair,
    ElectionPartialKeyBackup,
    ElectionPublicKey,
    GuardianRecord,
    PrivateGuardianRecord,
)
from compute.hashed_elgamal import backup_seed, encrypt_coordinate
from compute.manifest import Manifest
from compute.polynomial import compute_polynomial_coordinate
from compute.record import ElectionRecord
from compute.tally import accumulate, new_tally
from compute.verify import verify_guardians
from service.elections import crypto
from service.settings import Settings
from tests.secret_search import dump, leaks

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(db_url, tmp_path_factory.mktemp("data"))


class Api:
    """The test client, keeping every response body it received (searched for secrets at the end)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.bodies: list[str] = []

    def call(self, method: str, url: str, headers: dict[str, str], code: int | None = 200, **kw: Any) -> Any:
        r = self.client.request(method, url, headers=headers, **kw)
        self.bodies.append(r.text)
        if code is not None:
            assert r.status_code == code, r.text
        return r


class Remote:
    """One guardian on its own machine: its key material never leaves this object except as public data."""

    def __init__(self, eid: int, gid: str, order: int, quorum: int, token: str) -> None:
        self.eid, self.gid = eid, gid
        self.keys: ElectionKeyPair = make_guardian_keys(gid, order, quorum)
        self.h = {"Authorization": f"Bearer {token}"}
        self.received: list[ElectionPartialKeyBackup] = []

    @property
    def url(self) -> str:
        return f"/api/elections/{self.eid}/ceremony/guardians/{self.gid}"

    def post_key(self, api: Api, code: int = 200) -> Any:
        return api.call("POST", f"{self.url}/key", self.h, code, json=self.keys.share().to_json())

    def public_keys(self, api: Api) -> list[ElectionPublicKey]:
        got = api.call("GET", f"/api/elections/{self.eid}/ceremony/keys", self.h).json()
        return [ElectionPublicKey.from_json(k) for k in got]

    def post_backups(self, api: Api, backups: list[ElectionPartialKeyBackup] | None = None) -> Any:
        backups = backups if backups is not None else backups_for(self.keys, self.public_keys(api))
        return api.call(
            "POST", f"{self.url}/backups", self.h, json={"backups": [b.to_json() for b in backups]}
        )

    def verify(self, api: Api) -> Any:
        got = api.call("GET", f"{self.url}/backups", self.h).json()
        self.received = [ElectionPartialKeyBackup.from_json(b) for b in got]
        vs = verify_received_backups(self.keys, self.received, self.public_keys(api))
        return api.call(
            "POST", f"{self.url}/verifications", self.h, json={"verifications": [v.to_json() for v in vs]}
        )

    def checked_context(self, api: Api) -> ElectionContext:
        st = api.call("GET", f"/api/elections/{self.eid}/ceremony", self.h).json()
        assert st["state"] == "confirm" and st["context"] is not None
        context = ElectionContext.from_json(st["context"])
        problems = check_published_context(
            self.keys.share(), self.public_keys(api), context, from_hex(st["manifest_hash"])
        )
        assert problems == []
        return context

    def confirm(self, api: Api, code: int = 200, proof: dict[str, Any] | None = None) -> Any:
        proof = proof or make_confirmation(self.keys, self.checked_context(api)).to_json()
        return api.call("POST", f"{self.url}/confirmation", self.h, code, json=proof)

    def private_record(self) -> PrivateGuardianRecord:
        return PrivateGuardianRecord(
            self.gid,
            self.keys,
            guardian_election_partial_key_backups={b.owner_id: b for b in self.received},
        )


def _election(api: Api, admin: dict[str, str], n: int, k: int) -> dict[str, Any]:
    return api.call(
        "POST",
        "/api/elections",
        admin,
        201,
        json={"name": "Remote", "number_of_guardians": n, "quorum": k, "candidate_names": ["A", "B", "C"]},
    ).json()


def _start(api: Api, admin: dict[str, str], n: int, k: int) -> tuple[int, list[Remote]]:
    eid = _election(api, admin, n, k)["election_id"]
    ids = [f"guardian-{i + 1}" for i in range(n)]
    started = api.call(
        "POST", f"/api/elections/{eid}/ceremony", admin, 201, json={"guardian_ids": ids}
    ).json()
    assert started["key_mode"] == "guardian" and started["state"] == "keys"
    assert [(g["guardian_id"], g["sequence_order"]) for g in started["guardians"]] == [
        (gid, i + 1) for i, gid in enumerate(ids)
    ]
    assert set(started["guardians"][0]) == {"guardian_id", "sequence_order", "token"}
    return eid, [
        Remote(eid, g["guardian_id"], g["sequence_order"], k, g["token"]) for g in started["guardians"]
    ]


def _to_confirm(api: Api, guardians: list[Remote]) -> None:
    for g in guardians:
        g.post_key(api)
    for g in guardians:
        g.post_backups(api)
    for g in guardians:
        g.verify(api)


def _numbers(guardians: list[Remote]) -> list[int]:
    """Every secret of the ceremony: secret keys, every coefficient, every backup coordinate."""
    out = []
    for g in guardians:
        out.append(int(g.keys.key_pair.secret_key))
        out += [int(c.value) for c in g.keys.polynomial.coefficients]
        out += [
            int(compute_polynomial_coordinate(r.keys.sequence_order, g.keys.polynomial)) for r in guardians
        ]
    return out


def _ballot(manifest: dict[str, Any], bid: str, choice: int) -> PlaintextBallot:
    contest = manifest["contests"][0]
    return PlaintextBallot.from_json(
        {
            "object_id": bid,
            "style_id": "ballot-style-1",
            "contests": [
                {
                    "object_id": contest["object_id"],
                    "ballot_selections": [
                        {"object_id": s["object_id"], "vote": int(i == choice)}
                        for i, s in enumerate(contest["ballot_selections"])
                    ],
                }
            ],
        }
    )


def test_remote_ceremony_of_five_opens_an_election_no_secret_reaches_the_service(
    client: TestClient, admin: dict[str, str], engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = Api(client)
    eid, guardians = _start(api, admin, 5, 3)
    base = f"/api/elections/{eid}"

    # Round 1: keys. What is due says so, and the round moves on only with the last key.
    st = api.call("GET", f"{base}/ceremony", guardians[0].h).json()
    assert st["due"]["actions"] == ["post_key"] and st["state"] == "keys"
    for g in guardians[:4]:
        g.post_key(api)
    assert api.call("GET", f"{base}/ceremony", admin).json()["state"] == "keys"
    # Backups before every key is in: refused.
    four = backups_for(guardians[0].keys, guardians[0].public_keys(api))
    r = api.call(
        "POST",
        f"{guardians[0].url}/backups",
        guardians[0].h,
        409,
        json={"backups": [b.to_json() for b in four]},
    )
    assert "guardian-5" in r.json()["detail"]
    st = guardians[4].post_key(api).json()
    assert st["state"] == "backups" and st["due"]["actions"] == ["post_backups"]
    assert guardians[4].post_key(api).json()["state"] == "backups"  # the same key again: a no-op

    # Round 2: backups and their verifications.
    for g in guardians:
        g.post_backups(api)
    st = api.call("GET", f"{base}/ceremony", guardians[1].h).json()
    assert st["due"]["actions"] == ["post_verifications"] and len(st["due"]["backups_to_verify"]) == 4
    for g in guardians:
        st = g.verify(api).json()
    assert st["state"] == "confirm" and st["context"] is not None

    # Round 3: every guardian checks the published context and confirms it with its own key.
    for g in guardians[:4]:
        g.confirm(api)
    r = api.call("POST", f"{base}/open", admin, 409)
    assert "guardian-5" in r.json()["detail"] and "guardian-1" not in r.json()["detail"]
    st = guardians[4].confirm(api).json()
    assert st["state"] == "complete" and st["due"]["actions"] == []
    admin_view = api.call("GET", f"{base}/ceremony", admin).json()
    assert admin_view["due"] is None
    assert all(
        all(g[k] for k in ("key_posted_at", "backups_posted_at", "verifications_posted_at", "confirmed_at"))
        for g in admin_view["guardians"]
    )
    api.call("POST", f"{base}/open", admin)

    # What the election holds is what the custodial ceremony writes: reference-compatible records.
    keys = [g.keys.share() for g in guardians]
    records = api.call("GET", f"{base}/guardians", admin).json()
    assert records == [GuardianRecord.from_public_key(k).to_json() for k in keys]
    manifest_json = api.call("GET", f"{base}/manifest", admin).json()["manifest"]
    context_json = api.call("GET", f"{base}/context", admin).json()
    context = ElectionContext.from_json(context_json)
    manifest = Manifest.from_json(manifest_json)
    assert context == expected_context(keys, 3, manifest.crypto_hash())
    record = ElectionRecord(manifest, context, [GuardianRecord.from_json(x) for x in records])
    assert verify_guardians(record) == []
    summary = api.call("GET", f"{base}", admin).json()
    assert summary["key_mode"] == "guardian" and summary["keys_ready"]

    # Ballots are accepted, and a quorum (3 of 5) decrypts their tally with the backups it received.
    internal = crypto.internal_manifest(manifest_json)
    choices = [0, 1, 0, 2, 0]
    submitted = []
    for i, choice in enumerate(choices):
        ct = encrypt_ballot(_ballot(manifest_json, f"b-{i}", choice), internal, context, from_hex("AB"))
        sb = submit(ct, BallotBoxState.CAST)
        api.call("POST", f"{base}/ballots", admin, 201, json={"ballot": sb.to_json(), "action": "cast"})
        submitted.append(sb)
    tally = accumulate(new_tally(internal), submitted)
    present = [guardians[0], guardians[2], guardians[4]]
    plain = decrypt_with_guardians(
        tally, [g.private_record() for g in present], record.guardians, context, manifest
    )
    contest = next(iter(plain.contests.values()))
    selections = manifest_json["contests"][0]["ballot_selections"]
    assert [contest.selections[s["object_id"]].tally for s in selections] == [3, 1, 1]

    # No secret anywhere the service could see: tables, responses, logs.
    numbers = _numbers(guardians)
    assert len(numbers) == 5 * (1 + 3 + 5)
    assert leaks(dump(engine), numbers) == []
    assert leaks("\n".join(api.bodies), numbers) == []
    assert leaks("\n".join(r.getMessage() for r in caplog.records) + caplog.text, numbers) == []
    # The search can fail: a secret key written into the text is found.
    assert leaks(format(numbers[0], "x"), numbers)


def test_public_key_refusals(client: TestClient, admin: dict[str, str]) -> None:
    api = Api(client)
    eid, (g1, g2, _g3) = _start(api, admin, 3, 2)
    good = g1.keys.share().to_json()

    bad = copy.deepcopy(good)
    bad["coefficient_proofs"][1]["response"] = format(
        (from_hex(bad["coefficient_proofs"][1]["response"]) + 1) % Q, "X"
    )
    r = api.call("POST", f"{g1.url}/key", g1.h, 422, json=bad)
    assert "coefficient 1" in r.json()["detail"] and "coefficient 0" not in r.json()["detail"]

    other_owner = {**good, "owner_id": g2.gid}
    assert "owner_id" in api.call("POST", f"{g1.url}/key", g1.h, 422, json=other_owner).json()["detail"]
    # A key made for another slot's sequence order, under this slot's owner id.
    wrong_order = make_guardian_keys(g1.gid, 2, 2).share().to_json()
    assert "sequence_order" in api.call("POST", f"{g1.url}/key", g1.h, 422, json=wrong_order).json()["detail"]
    too_few = make_guardian_keys(g1.gid, 1, 1).share().to_json()
    api.call("POST", f"{g1.url}/key", g1.h, 422, json=too_few)
    # Garbage in a hex field is a 422 naming the field, not a 500.
    r = api.call("POST", f"{g1.url}/key", g1.h, 422, json={**good, "key": "zz"})
    assert "key" in r.json()["detail"]

    g1.post_key(api)
    g1.post_key(api)  # idempotent
    someone_else = make_guardian_keys(g1.gid, 1, 2).share().to_json()
    r = api.call("POST", f"{g1.url}/key", g1.h, 409, json=someone_else)
    assert "already holds another key" in r.json()["detail"]
    # g2 copying g1's key (commitments and proofs are not bound to a guardian) into its own slot.
    copied = {**good, "owner_id": g2.gid, "sequence_order": 2}
    assert "guardian-1" in api.call("POST", f"{g2.url}/key", g2.h, 409, json=copied).json()["detail"]

    # The custodial ceremony and a second remote one are refused on this election.
    api.call(
        "POST",
        f"/api/elections/{eid}/key-ceremony",
        admin,
        409,
        json={"guardian_ids": [f"g{i}" for i in range(3)]},
    )
    api.call("POST", f"/api/elections/{eid}/ceremony", admin, 409, json={"guardian_ids": ["a", "b", "c"]})


def test_token_checks(client: TestClient, admin: dict[str, str]) -> None:
    api = Api(client)
    eid, (g1, g2, g3) = _start(api, admin, 3, 2)
    other_eid, (o1, *_rest) = _start(api, admin, 3, 2)
    # A guardian cannot post into another's slot, nor read another's backups.
    api.call("POST", f"{g2.url}/key", g1.h, 403, json=g2.keys.share().to_json())
    api.call("GET", f"{g2.url}/backups", g1.h, 403)
    # An admin cannot act for a guardian.
    r = api.call("POST", f"{g1.url}/key", admin, 403, json=g1.keys.share().to_json())
    assert "admin" in r.json()["detail"]
    api.call("GET", f"{g1.url}/backups", admin, 403)
    # A guardian of another election (even with the same guardian id) cannot act or look here.
    api.call("POST", f"{g1.url}/key", o1.h, 403, json=g1.keys.share().to_json())
    api.call("GET", f"/api/elections/{eid}/ceremony", o1.h, 403)
    # Only an admin starts a ceremony; no token is a 401.
    api.call(
        "POST", f"/api/elections/{other_eid}/ceremony", g1.h, 403, json={"guardian_ids": ["a", "b", "c"]}
    )
    api.call("GET", f"/api/elections/{eid}/ceremony", {}, 401)
    # Nothing was stored by the refusals.
    assert api.call("GET", f"/api/elections/{eid}/ceremony/keys", admin).json() == []
    for g in (g1, g2, g3):
        g.post_key(api)
    assert len(api.call("GET", f"/api/elections/{eid}/ceremony/keys", g3.h).json()) == 3


def test_a_backup_off_the_committed_polynomial_stops_the_ceremony(
    client: TestClient, admin: dict[str, str]
) -> None:
    api = Api(client)
    eid, guardians = _start(api, admin, 3, 2)
    g1, g2, g3 = guardians
    for g in guardians:
        g.post_key(api)
    keys = g1.public_keys(api)
    # g1 sends g2 a backup that opens under g2's key but does not lie on g1's committed polynomial.
    honest = backups_for(g1.keys, keys)
    wrong = (compute_polynomial_coordinate(2, g1.keys.polynomial) + 1) % Q
    forged = ElectionPartialKeyBackup(
        g1.gid, g2.gid, 2, encrypt_coordinate(wrong, g2.keys.key_pair.public_key, backup_seed(g2.gid, 2))
    )
    g1.post_backups(api, [forged if b.designated_id == g2.gid else b for b in honest])
    g2.post_backups(api)
    g3.post_backups(api)
    g3.verify(api)
    st = g2.verify(api).json()
    assert st["state"] == "failed"
    assert st["failure"] == "guardian 'guardian-1''s backup for guardian 'guardian-2' failed its verification"
    assert st["context"] is None
    r = api.call("POST", f"/api/elections/{eid}/open", admin, 409)
    assert "not complete" in r.json()["detail"]
    # Nothing moves once it failed: no confirmation, no change of verification.
    g1.confirm(api, 409, proof={"commitment": "02", "challenge": "01", "response": "01"})
    assert api.call("GET", f"/api/elections/{eid}/context", admin, 404)


def test_confirmation_refusals_and_open_only_when_every_guardian_confirmed(
    client: TestClient, admin: dict[str, str]
) -> None:
    api = Api(client)
    eid, guardians = _start(api, admin, 3, 2)
    g1, g2, g3 = guardians
    # Before the context is published, nothing to confirm.
    g1.confirm(api, 409, proof={"commitment": "02", "challenge": "01", "response": "01"})
    _to_confirm(api, guardians)
    context = g1.checked_context(api)

    # Made with another guardian's secret key (under g1's name): refused.
    impostor = ElectionKeyPair(g1.gid, 1, g2.keys.key_pair, g2.keys.polynomial)
    r = g1.confirm(api, 422, proof=make_confirmation(impostor, context).to_json())
    assert "guardian-1" in r.json()["detail"]
    # Made with g1's own key but for another context (another election's): refused.
    _other_eid, others = _start(api, admin, 3, 2)
    _to_confirm(api, others)
    other_context = others[0].checked_context(api)
    g1.confirm(api, 422, proof=make_confirmation(g1.keys, other_context).to_json())
    # g1's own valid proof replayed by g2 for its slot: refused (bound to the guardian).
    g1_proof = make_confirmation(g1.keys, context).to_json()
    g2.confirm(api, 422, proof=g1_proof)
    # Malformed: 422 naming the field.
    g1.confirm(api, 422, proof={**g1_proof, "response": format(int(Q), "X")})

    g1.confirm(api, proof=g1_proof)
    g1.confirm(api, proof=g1_proof)  # the same again: a no-op
    g1.confirm(api, 409, proof=make_confirmation(g1.keys, context).to_json())  # another one: a conflict
    api.call("POST", f"/api/elections/{eid}/open", admin, 409)
    g2.confirm(api)
    api.call("POST", f"/api/elections/{eid}/open", admin, 409)
    assert api.call("GET", f"/api/elections/{eid}/guardians", admin).json() == []
    g3.confirm(api)
    assert api.call("POST", f"/api/elections/{eid}/open", admin).json()["state"] == "open"


def test_remote_ceremony_on_the_embedded_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same rounds on the embedded default (SQLite, migrated at start): the election opens."""
    from helpers_service import admin_headers

    from service.api.app import create_app

    s = Settings(
        data_dir=tmp_path,
        jwt_secret="test-jwt-secret-0123456789abcdef",
        server_secret="test-server-secret-0123456789abcdef",
    )
    with TestClient(create_app(s)) as c:
        api, admin = Api(c), admin_headers(s)
        eid, guardians = _start(api, admin, 3, 2)
        _to_confirm(api, guardians)
        for g in guardians[:2]:
            g.confirm(api)
        api.call("POST", f"/api/elections/{eid}/open", admin, 409)
        guardians[2].confirm(api)
        assert api.call("POST", f"/api/elections/{eid}/open", admin).json()["state"] == "open"
        assert len(api.call("GET", f"/api/elections/{eid}/guardians", admin).json()) == 3
