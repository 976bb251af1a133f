"""Row helpers for the service tests (a plain module: conftest modules are not importable by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from service.db.models import Base, Election
from service.db.session import session_factory
from service.security.auth import Role, issue_token
from service.settings import Settings


def api_settings(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings of an API under test: fixed secrets, a cheap KDF (production's is 64 MiB), a rate limit
    no test reaches, the schema migrated by the session's fixture."""
    base: dict[str, Any] = {
        "database_url": db_url,
        "data_dir": data_dir,
        "server_secret": "test-server-secret-0123456789abcdef",
        "jwt_secret": "test-jwt-secret-0123456789abcdef",
        "kdf_time_cost": 1,
        "kdf_memory_kib": 1024,
        "kdf_parallelism": 1,
        "job_rate_limit_per_minute": 10_000,
        "auto_migrate": False,
    }
    return Settings(**{**base, **overrides})


def admin_headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, 'admin', Role.ADMIN)}"}


def custodial_keys(
    client: Any, admin: dict[str, str], election_id: int, passphrases: dict[str, str]
) -> dict[str, Any]:
    """The custodial key ceremony as its callers now run it: the admin sends guardian ids only and gets
    public data and tokens; then each guardian claims its own credential file with its own token and
    passphrase. Returns the ceremony's response with each guardian's claimed ``credentials`` (and
    ``claimed_at``) added, the shape the ceremony's response had before claims."""
    r = client.post(
        f"/api/elections/{election_id}/key-ceremony", json={"guardian_ids": list(passphrases)}, headers=admin
    )
    assert r.status_code == 200, r.text
    kc = r.json()
    for g in kc["guardians"]:
        assert "credentials" not in g
        claim = client.post(
            f"/api/elections/{election_id}/guardians/{g['guardian_id']}/claim",
            json={"passphrase": passphrases[g["guardian_id"]]},
            headers={"Authorization": f"Bearer {g['token']}"},
        )
        assert claim.status_code == 200, claim.text
        g["credentials"] = claim.json()["credentials"]
        g["claimed_at"] = claim.json()["claimed_at"]
    return kc


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table: a failed request must leave these unchanged."""
    with engine.connect() as c:
        return {
            name: c.scalar(select(func.count()).select_from(t)) for name, t in Base.metadata.tables.items()
        }


def make_election(
    engine: Engine,
    *,
    state: str = "closed",
    guardians: int = 3,
    quorum: int = 2,
    ballots: int = 0,
    spoiled_every: int = 0,
) -> int:
    """An election row with public guardian rows and dummy ballots written by SQL (planning reads no
    payload, so none is real here)."""
    with session_factory(engine).begin() as s:
        e = Election(
            name="t",
            state=state,
            manifest={},
            number_of_guardians=guardians,
            quorum=quorum,
            manifest_version=1,
        )
        s.add(e)
        s.flush()
        for i in range(guardians):
            s.execute(
                text("INSERT INTO guardian VALUES (:e, :g, :o, '{}')"),
                {"e": e.id, "g": f"g{i + 1}", "o": i + 1},
            )
        if ballots:
            insert_dummy_ballots(s, e.id, ballots, spoiled_every)
        return e.id


def insert_dummy_ballots(s: Session, election_id: int, n: int, spoiled_every: int = 0) -> None:
    s.execute(
        text(
            """
            INSERT INTO ballot (election_id, object_id, state, code, payload)
            SELECT :e, 'ballot-' || i,
                   CASE WHEN :k > 0 AND i % :k = 0 THEN 2 ELSE 1 END,
                   md5(i::text), '\\x00'::bytea
            FROM generate_series(1, :n) AS i
            """
        ),
        {"e": election_id, "n": n, "k": spoiled_every},
    )


def fake_aggregate(selections: int = 5, contests: int = 1) -> dict:
    """An aggregate encrypted tally (reference JSON) of ``selections`` selections per contest, each an
    encryption of 0 with nonce 0: planning needs its shape, not its values."""
    from compute.constants import ONE
    from compute.elgamal import Ciphertext
    from compute.group import to_hex

    zero = Ciphertext(ONE, ONE).to_json()
    return {
        "object_id": "election-results",
        "contests": {
            f"contest-{c}": {
                "object_id": f"contest-{c}",
                "sequence_order": c,
                "description_hash": to_hex(c + 1),
                "selections": {
                    f"c{c}-s{i}": {
                        "object_id": f"c{c}-s{i}",
                        "sequence_order": i,
                        "description_hash": to_hex(i + 1),
                        "ciphertext": zero,
                    }
                    for i in range(selections)
                },
            }
            for c in range(contests)
        },
    }


def complete_tally(engine: Engine, tally_job_id: object, selections: int = 5) -> None:
    """Stand-in for the bridge's tally: the job COMPLETED and the election row holding an aggregate."""
    import uuid

    from sqlalchemy import update

    from service.db.models import ElectionCenter, ElectionJob

    tally_job_id = uuid.UUID(str(tally_job_id))
    with session_factory(engine).begin() as s:
        s.execute(update(ElectionJob).where(ElectionJob.job_id == tally_job_id).values(status="COMPLETED"))
        s.execute(
            update(ElectionCenter)
            .where(ElectionCenter.tally_job_id == tally_job_id, ElectionCenter.kind == "election")
            .values(encrypted_tally=fake_aggregate(selections))
        )


# Two contests, so one contest of a ballot can be copied alone (tests of clones and of ballot fields).
TWO_CONTEST_CHOICES = [
    {"contest-1": ["Ann"], "council": ["council-0", "council-9"]},
    {"contest-1": ["Bob"], "council": ["council-1"]},
]


def ok(r: Any, code: int = 200) -> Any:
    assert r.status_code == code, r.text
    return r.json()


def open_two_contest_election(client: Any, admin: dict[str, str], name: str) -> dict[str, Any]:
    """An open one-guardian election with two contests: its id, manifest, context and ballots URL."""
    from tests.compute.ballot_helpers import two_contest_manifest

    body = {"name": name, "number_of_guardians": 1, "quorum": 1, "manifest": two_contest_manifest().to_json()}
    eid = ok(client.post("/api/elections", json=body, headers=admin), 201)["election_id"]
    kc = ok(client.post(f"/api/elections/{eid}/key-ceremony", json={"guardian_ids": ["solo"]}, headers=admin))
    ok(client.post(f"/api/elections/{eid}/open", headers=admin))
    manifest = ok(client.get(f"/api/elections/{eid}/manifest", headers=admin))["manifest"]
    return {"id": eid, "manifest": manifest, "context": kc["context"], "url": f"/api/elections/{eid}/ballots"}


def device_ballot(e: dict[str, Any], bid: str, choice: int = 0) -> Any:
    """A valid cast ballot made by a voting device outside the service, for ``open_two_contest_election``."""
    from compute.ballot import BallotBoxState
    from compute.encrypt import encrypt_ballot, submit
    from compute.group import from_hex
    from service.elections import crypto
    from tests.compute.ballot_helpers import plaintext

    ct = encrypt_ballot(
        plaintext(bid, TWO_CONTEST_CHOICES[choice]),
        crypto.internal_manifest(e["manifest"]),
        crypto.context_of(e["context"]),
        from_hex("AB"),
    )
    return submit(ct, BallotBoxState.CAST)
