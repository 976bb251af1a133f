"""``amarvote guardian``: each guardian its own process with its own folder, against the API served by
uvicorn on 127.0.0.1 over a PostgreSQL database of this module's own, the executor over the outbox on the
session's local Ray. What the guardians keep never reaches the service; ``decrypt`` refuses to decrypt
anything but the published aggregate and spoiled ballots, uploading nothing."""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from compute.ballot import SubmittedBallot
from compute.ceremony import make_guardian_keys
from compute.context import ElectionContext
from compute.decryption_target import target_of
from service.db import migrate
from service.db.models import ElectionJob, ShareUpload
from service.db.session import make_engine
from service.elections import crypto
from service.settings import Settings
from tests.cli.guardian_harness import (
    Admin,
    ballots,
    executing,
    finish,
    run,
    run_ceremony,
    secrets_of,
    served,
    settings_for,
    spawn,
    start_ceremony,
)
from tests.cli.run import amarvote
from tests.compute.ballot_helpers import rerandomised
from tests.conftest import new_database
from tests.secret_search import dump, leaks

pytestmark = pytest.mark.services
VOTES = ["A", "B", "A", "C", "A", "B", "A", "C"]
SPOILED = {2, 5}


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    with new_database() as url:
        migrate.upgrade(url)
        yield url


@pytest.fixture(scope="module")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture()
def settings(db_url: str, tmp_path: Path) -> Settings:
    return settings_for(db_url, tmp_path / "data")


def _tallied(admin: Admin, eid: int, votes: list[str], spoiled: set[int]) -> None:
    admin("POST", f"/api/elections/{eid}/open")
    ballots(admin, eid, votes, spoiled)
    admin("POST", f"/api/elections/{eid}/close")
    t = admin("POST", "/api/tally/create", json={"election_id": eid, "chunk_size": 3})
    assert admin.wait_job(t["jobId"])["status"] == "COMPLETED"


def test_five_guardians_each_its_own_process_no_secret_reaches_the_service_and_three_decrypt(
    settings: Settings, engine: Engine, tmp_path: Path, local_ray: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    with served(settings) as (url, recorder), executing(settings):
        admin = Admin(url, settings)
        eid, guardians = start_ceremony(admin, tmp_path, 5, 3, "held by its guardians")
        ceremony_out = run_ceremony(url, eid, guardians, tmp_path)
        outputs += ceremony_out.values()
        records = {r["guardian_id"]: r for r in admin("GET", f"/api/elections/{eid}/guardians")}
        for g in guardians:
            # The fingerprint each printed is its published key's; its folder is its own.
            fp = re.search(r"key fingerprint: ([0-9a-f-]{19})", ceremony_out[g.gid])
            assert fp is not None, ceremony_out[g.gid]
            from cli.guardian.folder import key_fingerprint

            assert fp.group(1) == key_fingerprint(int(records[g.gid]["election_public_key"], 16))
            assert g.folder.stat().st_mode & 0o777 == 0o700
            assert all(f.stat().st_mode & 0o777 == 0o600 for f in g.folder.iterdir())
            assert len(g.private().guardian_election_partial_key_backups) == 4
        # Running the ceremony again changes nothing.
        code, out = run("ceremony", "--dir", str(guardians[0].folder), cwd=tmp_path, env=guardians[0].env())
        assert code == 0 and "is complete" in out, out

        _tallied(admin, eid, VOTES, SPOILED)
        admin("POST", f"/api/elections/{eid}/missing-guardians", json={"guardian_ids": ["g4", "g5"]})
        available = guardians[:3]
        procs = [
            (
                g,
                spawn(
                    "decrypt",
                    "--dir",
                    str(g.folder),
                    "--workers",
                    "2" if g.gid == "g1" else "1",
                    "--timeout",
                    "300",
                    cwd=tmp_path,
                    env=g.env(),
                ),
            )
            for g in available
        ]
        for g, p in procs:
            code, out = finish(p)
            outputs.append(out)
            assert code == 0, out
            assert "checked: the aggregate is the product of the 6 cast ballots" in out, out
            timing = re.search(r"timings: .*", out)
            assert timing is not None
            print(f"{g.gid} decrypt {timing.group(0)}")
        c = admin("POST", "/api/combine/decryption", json={"election_id": eid})
        assert admin.wait_job(c["jobId"])["status"] == "COMPLETED"
        res = admin("GET", f"/api/elections/{eid}/results")
        counts = {s["selection_id"]: s["votes"] for s in res["contests"][0]["selections"]}
        cast = Counter(v for i, v in enumerate(VOTES) if i not in SPOILED)
        assert counts == {x: cast.get(x, 0) for x in "ABC"}
        for i in SPOILED:
            assert res["spoiled_ballots"][f"b{i}"]["contest-1"] == {x: int(x == VOTES[i]) for x in "ABC"}
        record = admin("GET", f"/api/elections/{eid}/record")
        zipfile.ZipFile(io.BytesIO(record)).extractall(tmp_path / "record")
        code, status_out = run(
            "status", "--dir", str(guardians[0].folder), cwd=tmp_path, env=guardians[0].env()
        )
        assert code == 0 and "ceremony: complete" in status_out and "COMPLETED" in status_out, status_out
        outputs.append(status_out)

    verified = amarvote(
        "record", "verify", "--local", str(tmp_path / "record" / "election_record"), cwd=tmp_path
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # Nothing secret anywhere the service is: tables, its logs, what it received and answered.
    numbers = secrets_of(guardians)
    assert len(numbers) == 5 * (1 + 3 + 5 + 4)
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "/ceremony/guardians/g1/key" in logs  # the access log was captured
    bodies = "\n".join(b.decode("latin-1") for b in recorder.bodies)
    assert leaks(dump(engine), numbers) == []
    assert leaks(logs, numbers) == []
    assert leaks(bodies, numbers) == []
    # The passphrases: in no file of any folder, no output.
    for g in guardians:
        for f in g.folder.iterdir():
            assert g.passphrase.encode() not in f.read_bytes(), f
        assert all(g.passphrase not in o for o in outputs)


def _guardian_held(
    admin: Admin, url: str, tmp: Path, n: int, k: int, missing: list[str]
) -> tuple[int, list[Any]]:
    eid, guardians = start_ceremony(admin, tmp, n, k, "refusals")
    run_ceremony(url, eid, guardians, tmp)
    _tallied(admin, eid, VOTES, SPOILED)
    admin("POST", f"/api/elections/{eid}/missing-guardians", json={"guardian_ids": missing})
    return eid, guardians


def _uploads_and_jobs(engine: Engine, eid: int) -> tuple[int, int]:
    with engine.connect() as c:
        uploads = c.scalar(
            select(func.count()).select_from(ShareUpload).where(ShareUpload.election_id == eid)
        )
        jobs = c.scalar(
            select(func.count())
            .select_from(ElectionJob)
            .where(ElectionJob.election_id == eid, ElectionJob.operation_type != "TALLY")
        )
    return int(uploads or 0), int(jobs or 0)


def _refused(g: Any, eid: int, tmp: Path, engine: Engine, *reasons: str) -> str:
    code, out = run("decrypt", "--dir", str(g.folder), "--no-wait", cwd=tmp, env=g.env())
    assert code == 1, out
    flat = " ".join(out.split())
    for reason in reasons:
        assert reason in flat, out
    assert _uploads_and_jobs(engine, eid) == (0, 0)  # nothing uploaded, no job
    progress = g.folder / "decryption.json"
    assert not progress.exists() or not json.loads(progress.read_text())["uploaded"]
    assert g.passphrase not in out
    return out


def test_decrypt_refuses_what_the_election_did_not_publish_and_uploads_nothing(
    settings: Settings, engine: Engine, tmp_path: Path, local_ray: None
) -> None:
    with served(settings) as (url, recorder), executing(settings):
        admin = Admin(url, settings)
        eid, guardians = _guardian_held(admin, url, tmp_path, 3, 2, ["g3"])
        g1 = guardians[0]
        base = f"/api/elections/{eid}"
        units = admin("GET", f"{base}/decryption-units")["units"]
        spoiled_unit = next(u for u in units if u["kind"] == "spoiled")
        first_cast = admin("GET", f"{base}/cast-ciphertexts", params={"limit": 1})["ballots"][0]
        cast_ballot = SubmittedBallot.from_json(admin("GET", f"{base}/ballots/{first_cast['object_id']}"))

        # 1. The aggregate changed in the database: selection A replaced by one cast ballot's A (what a
        # service learning that voter's vote from the slice's shares would do), in the slice too.
        own_a = next(s for c in cast_ballot.contests for s in c.ballot_selections if s.object_id == "A")
        with engine.connect() as c:
            saved = c.execute(
                text("SELECT encrypted_tally FROM election WHERE id = :e"), {"e": eid}
            ).scalar_one()
            slices = c.execute(
                text(
                    "SELECT id, encrypted_tally FROM election_center"
                    " WHERE election_id = :e AND kind = 'slice'"
                ),
                {"e": eid},
            ).all()

        def swap(doc: dict[str, Any]) -> dict[str, Any]:
            doc = json.loads(json.dumps(doc))
            for contest in doc["contests"].values():
                if "A" in contest["selections"]:
                    contest["selections"]["A"]["ciphertext"] = own_a.ciphertext.to_json()
            return doc

        with engine.begin() as c:
            c.execute(
                text("UPDATE election SET encrypted_tally = :t WHERE id = :e"),
                {"t": json.dumps(swap(saved)), "e": eid},
            )
            for sid, doc in slices:
                c.execute(
                    text("UPDATE election_center SET encrypted_tally = :t WHERE id = :i"),
                    {"t": json.dumps(swap(doc)), "i": sid},
                )
        try:
            _refused(
                g1,
                eid,
                tmp_path,
                engine,
                "the aggregate's selection contest-1/A is not the product of the 6 cast ballots",
            )
        finally:
            with engine.begin() as c:
                c.execute(
                    text("UPDATE election SET encrypted_tally = :t WHERE id = :e"),
                    {"t": json.dumps(saved), "e": eid},
                )
                for sid, doc in slices:
                    c.execute(
                        text("UPDATE election_center SET encrypted_tally = :t WHERE id = :i"),
                        {"t": json.dumps(doc), "i": sid},
                    )

        # 2. A cast ballot presented as spoiled: the unit's target swapped for a cast ballot's ciphertexts,
        # under the spoiled ballot's id, then under its own.
        path = f"{base}/decryption-units/{spoiled_unit['unit_id']}"

        def cast_as(object_id: str) -> Any:
            def doctor(doc: dict[str, Any]) -> dict[str, Any]:
                t = target_of(cast_ballot).to_json()
                t["object_id"] = object_id or doc["targets"][0]["object_id"]
                return {**doc, "targets": [t]}

            return doctor

        recorder.doctor[path] = cast_as("")
        _refused(
            g1,
            eid,
            tmp_path,
            engine,
            "(presented for decryption) repeats a selection ciphertext of cast ballot",
            first_cast["object_id"],
        )
        recorder.doctor[path] = cast_as(first_cast["object_id"])
        _refused(
            g1,
            eid,
            tmp_path,
            engine,
            f"ballot {first_cast['object_id']} is presented for decryption but not published as spoiled",
        )
        del recorder.doctor[path]

        # 3. Two cast ballots sharing a ciphertext: a copy written by hand, past the API's clone check.
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO ballot (election_id, object_id, state, code, payload)"
                    " SELECT election_id, 'clone-1', state, code || 'x', payload FROM ballot"
                    " WHERE election_id = :e AND object_id = :b"
                ),
                {"e": eid, "b": first_cast["object_id"]},
            )
        try:
            _refused(
                g1,
                eid,
                tmp_path,
                engine,
                "cast ballot clone-1 repeats a selection ciphertext of cast ballot",
                first_cast["object_id"],
            )
        finally:
            with engine.begin() as c:
                c.execute(
                    text("DELETE FROM ballot WHERE election_id = :e AND object_id = 'clone-1'"), {"e": eid}
                )

        # 4. A cast ballot re-randomised (each ciphertext times an encryption of zero: the same votes, no
        # fingerprint in common), its hashes and code recomputed, written over a spoiled ballot of a unit
        # in the database: the unit's target is then exactly that ballot's, so only its proofs (copied
        # from the cast ballot, none verifies) betray it.
        spoiled_id = admin("GET", path)["targets"][0]["object_id"]
        key = ElectionContext.from_json(admin("GET", f"{base}/context")).elgamal_public_key
        fake = rerandomised(cast_ballot, spoiled_id, key)
        fake_payload, fake_code = crypto.encode(fake)
        where = "WHERE election_id = :e AND object_id = :b"
        with engine.begin() as c:
            kept = c.execute(
                text(f"SELECT payload, code FROM ballot {where}"), {"e": eid, "b": spoiled_id}
            ).one()
            c.execute(
                text(f"UPDATE ballot SET payload = :p, code = :c {where}"),
                {"p": fake_payload, "c": fake_code, "e": eid, "b": spoiled_id},
            )
        try:
            assert admin("GET", path)["targets"] == [target_of(fake).to_json()]  # the row just written
            _refused(
                g1,
                eid,
                tmp_path,
                engine,
                f"spoiled ballot {spoiled_id} (presented for decryption) is not a valid ballot of this"
                f" election: ballot {spoiled_id}, contest contest-1, selection",
                "proof",
            )
        finally:
            with engine.begin() as c:
                c.execute(
                    text(f"UPDATE ballot SET payload = :p, code = :c {where}"),
                    {"p": kept.payload, "c": kept.code, "e": eid, "b": spoiled_id},
                )

        # A wrong passphrase: refused naming the folder, before anything is read from the API.
        code, out = run(
            "decrypt", "--dir", str(g1.folder), cwd=tmp_path, env=g1.env("not the passphrase at all")
        )
        assert code == 1 and "passphrase does not open" in out and str(g1.folder) in " ".join(out.split()), (
            out
        )
        assert "not the passphrase at all" not in out

        # Untampered, the same guardian decrypts (so each refusal above was the tampering's).
        code, out = run("decrypt", "--dir", str(g1.folder), "--timeout", "300", cwd=tmp_path, env=g1.env())
        assert code == 0, out
        assert _uploads_and_jobs(engine, eid) == (0, 2)  # checked and moved; a partial and a compensated job


def test_a_slot_holding_another_key_stops_init_and_ceremony(settings: Settings, tmp_path: Path) -> None:
    with served(settings) as (url, _recorder):
        admin = Admin(url, settings)
        eid, (g1, g2, _g3) = start_ceremony(admin, tmp_path, 3, 2, "stolen tokens")

        def post_other_key(g: Any, order: int) -> None:
            key = make_guardian_keys(g.gid, order, 2).share().to_json()
            r = admin.http.post(
                f"/api/elections/{eid}/ceremony/guardians/{g.gid}/key",
                json=key,
                headers={"Authorization": f"Bearer {g.token}"},
            )
            assert r.status_code == 200, r.text

        post_other_key(g1, 1)
        code, out = run(*g1.init_args(url, eid), cwd=tmp_path, env=g1.init_env())
        assert code == 1 and "HOLDS A KEY THAT IS NOT ITS OWN" in " ".join(out.split()), out
        assert not g1.folder.exists()

        code, out = run(*g2.init_args(url, eid), cwd=tmp_path, env=g2.init_env())
        assert code == 0, out
        post_other_key(g2, 2)
        code, out = run("ceremony", "--dir", str(g2.folder), cwd=tmp_path, env=g2.env())
        assert code == 1 and "HOLDS A KEY THAT IS NOT ITS OWN" in " ".join(out.split()), out
