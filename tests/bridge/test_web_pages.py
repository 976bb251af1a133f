"""The bulletin board and the operator console in a real browser (Debian's chromium under Playwright),
served by uvicorn over the session's PostgreSQL, with the relay, RabbitMQ, the bridge and Ray running the
jobs they show. One server and one browser for the module. Screenshots go to docs/screenshots/ with
``AMARVOTE_UPDATE_SCREENSHOTS=1``, else to a temporary folder.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select, text, update

from bridge.brokers.rabbitmq import RabbitMQBroker
from bridge.executor import Executor
from cli.api import queue_reader
from service.api.app import create_app
from service.db.models import Ballot, ElectionJob
from service.db.session import SessionFactory
from service.elections.board import key_fingerprint
from service.jobs import planning
from service.security.auth import Role, issue_token
from service.settings import Settings
from tests.bridge.helpers_bridge import (
    bridge_settings,
    closed_election_with_tally,
    job_row,
    make_tally_job,
    start_decryptions,
    wait_completed,
    wait_for,
)
from tests.bridge.test_bridge_flow import executor, pipeline
from tests.conftest import TEST_JWT_SECRET

pytestmark = pytest.mark.services
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots go to docs/screenshots/ only when asked (after a page changed, to look at them and commit
# them): otherwise every run re-rendered them into the checkout, and pixel noise got committed unnoticed.
DOC_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SHOTS = (
    DOC_SHOTS
    if os.environ.get("AMARVOTE_UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "amarvote-screenshots"
)
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
VOTES = ["A", "B", "A", "C", "A", "B", "C"]
SPOILED = {2, 5}


def _free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Web:
    url: str
    settings: Settings
    browser: Any
    admin_token: str

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, follow_redirects=False, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=30, follow_redirects=False, **kw)


@pytest.fixture(scope="module")
def web(bridge_db: str, amqp_url: str, server_secret: bytes) -> Iterator[Web]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: scripts/services.sh installs Debian's chromium (the browser tests never"
            " download one)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    settings = Settings(
        database_url=bridge_db,
        amqp_url=amqp_url,
        server_secret=server_secret.decode(),
        jwt_secret=TEST_JWT_SECRET,
        auto_migrate=False,
        job_rate_limit_per_minute=10_000,
        board_lookups_per_minute=1000,
        ray_dashboard_url="http://127.0.0.1:8265",
        grafana_url="http://127.0.0.1:3000",
    )
    app = create_app(settings, queue_depths=queue_reader(settings))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, interval=0.05)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield Web(
                f"http://127.0.0.1:{port}",
                settings,
                browser,
                issue_token(settings, "operator", Role.ADMIN),
            )
        finally:
            browser.close()
            server.should_exit = True
            thread.join(timeout=30)


def _login(web: Web, viewport: dict[str, int] = DESKTOP) -> Any:
    """A browser context logged in to the console (through its login page, with the keyboard)."""
    context = web.browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(web.url + "/console")
    assert page.url == web.url + "/console/login"
    page.fill("#token", web.admin_token)
    page.press("#token", "Enter")
    page.wait_for_url(web.url + "/console")
    return page


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


# ---- the console's gate ----


def test_console_login_guardian_refused_csrf_and_cookie_flags(
    web: Web, factory: SessionFactory, clean: None
) -> None:
    # No session: the pages redirect to the login page, the polled JSON answers 401.
    r = web.get("/console/jobs")
    assert (r.status_code, r.headers["location"]) == (303, "/console/login")
    assert web.get("/console/api/jobs").status_code == 401
    page = web.browser.new_page()
    page.goto(web.url + "/console/queues")
    assert page.url == web.url + "/console/login"
    _shot(page, "console-login")
    page.close()

    # A guardian's token is refused, and so is a forged or missing one.
    guardian = issue_token(web.settings, "guardian:1:g1", Role.GUARDIAN, election_id=1, guardian_id="g1")
    r = web.post("/console/login", data={"token": guardian})
    assert r.status_code == 403 and "set-cookie" not in r.headers
    assert web.post("/console/login", data={"token": web.admin_token + "x"}).status_code == 401
    assert web.post("/console/login", data={}).status_code == 401

    # An admin's: a session cookie with the stated flags (no Secure over plain http).
    r = web.post("/console/login", data={"token": web.admin_token})
    assert r.status_code == 303 and r.headers["location"] == "/console"
    cookie = r.headers["set-cookie"]
    flags = {f.strip().split("=")[0].lower(): f.strip() for f in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/console" and "secure" not in flags
    assert 0 < int(flags["max-age"].split("=")[1]) <= 30 * 60
    session = cookie.split(";")[0].split("=", 1)[1]
    jar = {"amarvote_console": session}
    assert web.get("/console/jobs", cookies=jar).status_code == 200
    assert web.get("/console/jobs", cookies={"amarvote_console": session[:-2] + "AA"}).status_code == 303

    # An action without the CSRF token (or with another session's) is refused: 403, nothing done.
    job_id = failed_job(factory)
    assert web.post(f"/console/jobs/{job_id}/redrive", cookies=jar).status_code == 403
    r = web.post(f"/console/jobs/{job_id}/redrive", cookies=jar, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    assert job_row(factory, job_id).status == "FAILED"
    page = web.get(f"/console/jobs/{job_id}", cookies=jar).text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    r = web.post(f"/console/jobs/{job_id}/redrive", cookies=jar, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["redriven"] == 1

    # Served over https the cookie is Secure too.
    from fastapi.testclient import TestClient

    with TestClient(create_app(web.settings), base_url="https://testserver") as c:
        r = c.post("/console/login", data={"token": web.admin_token}, follow_redirects=False)
        assert "secure" in r.headers["set-cookie"].lower()


def failed_job(factory: SessionFactory) -> Any:
    """A tally job whose first chunk is FAILED, written directly (no bridge needed)."""
    _, job_id = make_tally_job(factory, ballots=4, chunk_size=2)
    with factory.begin() as s:
        s.execute(
            text(
                "UPDATE chunk_task SET state = 'FAILED', attempts = 3, last_error = 'boom' WHERE id ="
                " (SELECT min(id) FROM chunk_task WHERE job_id = :j)"
            ),
            {"j": job_id},
        )
        s.execute(
            update(ElectionJob)
            .where(ElectionJob.job_id == job_id)
            .values(status="FAILED", failed_chunks=1, error_message="1 chunk(s) failed")
        )
    return job_id


# ---- live jobs ----


def _value(page: Any, selector: str) -> float:
    return float(page.eval_on_selector(selector, "e => e.value"))


def test_console_progress_bar_advances_to_100_and_completed_without_reload(
    web: Web, settings: Settings, factory: SessionFactory, ray_local: None, clean: None
) -> None:
    _, job_id = make_tally_job(factory, ballots=60, chunk_size=5, metadata={"sleep": 0.8})
    page = _login(web)
    page.goto(f"{web.url}/console/jobs/{job_id}")
    page.evaluate("window.__noReload = true")
    assert _value(page, "#job-progress") == 0 and page.inner_text("#job-status") == "QUEUED"
    jobs = page.context.new_page()
    jobs.goto(f"{web.url}/console/jobs?kind=TALLY")
    jobs.evaluate("window.__noReload = true")
    seen: list[float] = []
    with pipeline(settings, factory):
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            seen.append(_value(page, "#job-progress"))
            if page.inner_text("#job-status") == "COMPLETED" and seen[-1] == 100:
                break
            if len(seen) == 8:
                _shot(jobs, "console-jobs-live")
            time.sleep(0.25)
    assert page.inner_text("#job-status") == "COMPLETED", seen
    assert seen[0] < 100 and seen[-1] == 100 and seen == sorted(seen), seen
    assert page.evaluate("window.__noReload") is True  # redrawn by the script, not reloaded
    row = f'tr[data-job="{job_id}"]'
    jobs.wait_for_function(
        f"""() => {{ const r = document.querySelector('{row}');
                  return r && r.querySelector('[data-field=status]').textContent === 'COMPLETED'
                         && r.querySelector('progress').value === 100; }}""",
        timeout=10_000,
    )
    assert jobs.evaluate("window.__noReload") is True
    assert page.inner_text("#c-done") == "12" and page.inner_text("#c-failed") == "0"
    _shot(page, "console-job")
    jobs.set_viewport_size(PHONE)
    _shot(jobs, "console-jobs-phone")
    jobs.set_viewport_size(DESKTOP)
    _shot(jobs, "console-jobs")
    page.context.close()


def test_console_shows_a_failed_chunk_and_its_redrive_completes_the_job(
    web: Web, settings: Settings, factory: SessionFactory, ray_local: None, clean: None
) -> None:
    _, job_id = make_tally_job(factory, ballots=20, chunk_size=5, metadata={"poison": [2]})
    page = _login(web)
    page.goto(f"{web.url}/console/jobs/{job_id}")
    with pipeline(settings, factory, bridge=executor(settings)):
        page.wait_for_function(
            "() => document.getElementById('job-status').textContent === 'FAILED'", timeout=90_000
        )
        page.wait_for_selector("#redrive-form:not([hidden])")
        errors = page.locator("#tasks td.error").all_inner_texts()
        assert "PoisonError: chunk 2 is poisoned" in errors
        assert page.inner_text("#c-failed") == "1"
        _shot(page, "console-job-failed")
        # The operator removes the cause, then re-drives from the page, with the keyboard.
        with factory.begin() as s:
            s.execute(update(ElectionJob).where(ElectionJob.job_id == job_id).values(metadata_={}))
        page.focus("#redrive")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => document.getElementById('action-result').textContent.startsWith('Re-drove 1')",
            timeout=10_000,
        )
        page.wait_for_function(
            "() => document.getElementById('job-status').textContent === 'COMPLETED'", timeout=90_000
        )
    assert job_row(factory, job_id).status == "COMPLETED"
    assert page.inner_text("#c-done") == "4" and page.is_hidden("#redrive-form")
    page.context.close()


# ---- the public board ----


@dataclass
class Published:
    election_id: int
    cast_code: str
    spoiled_code: str
    spoiled_id: str
    record: dict[str, Any]  # name under election_record/ -> JSON
    record_text: str


@pytest.fixture(scope="module")
def published(
    web: Web, bridge_db: str, factory: SessionFactory, amqp_url: str, server_secret: bytes, ray_local: None
) -> Iterator[Published]:
    """A decrypted and verified election (real arithmetic: 3 guardians, quorum 2, every one present)."""
    settings = bridge_settings(bridge_db, amqp_url, server_secret, lease_seconds=30)
    with factory.begin() as s:
        s.execute(text("TRUNCATE election, outbox RESTART IDENTITY CASCADE"))
    election_id, creds, tally_job = closed_election_with_tally(factory, "board", VOTES, SPOILED, 4)

    with pipeline(
        settings, factory, bridge=Executor(factory, RabbitMQBroker(amqp_url), settings, shutdown_grace=10)
    ):
        wait_completed(factory, tally_job)
        for j in start_decryptions(
            factory, settings, server_secret, election_id, creds, guardians=("g1", "g2", "g3"), missing=()
        ):
            wait_completed(factory, j)
        with factory.begin() as s:
            combine = planning.create_combine_job(s, election_id, "admin").job_id
        wait_completed(factory, combine)
        with factory.begin() as s:
            verify = planning.create_verify_job(s, election_id, "admin").job_id
        wait_completed(factory, verify)
    with factory() as s:
        codes = {
            b.object_id: b.code for b in s.scalars(select(Ballot).where(Ballot.election_id == election_id))
        }
    r = web.get(f"/elections/{election_id}/record.zip")  # no token: the public record
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        record = {n.removeprefix("election_record/"): json.loads(z.read(n)) for n in z.namelist()}
    spoiled_id = f"ballot-{min(SPOILED)}"
    yield Published(
        election_id,
        codes["ballot-0"],
        codes[spoiled_id],
        spoiled_id,
        record,
        "\n".join(json.dumps(d) for d in record.values()),
    )
    with factory.begin() as s:
        s.execute(text("TRUNCATE election, outbox RESTART IDENTITY CASCADE"))


def _lookup(page: Any, code: str) -> str:
    page.fill("#code", code)
    page.press("#code", "Enter")  # the keyboard, no mouse
    page.wait_for_selector("#lookup-result")
    return str(page.inner_text("#lookup-result"))


def _labels(p: Published) -> dict[str, str]:
    """What the board shows for each selection (its candidate's name) -> the selection's id, from the
    record's manifest."""
    manifest = p.record["manifest.json"]
    names = {c["object_id"]: c["name"]["text"][0]["value"] for c in manifest["candidates"] if c.get("name")}
    return {
        names.get(s["candidate_id"], s["candidate_id"]): s["object_id"]
        for c in manifest["contests"]
        for s in c["ballot_selections"]
    }


def _record_numbers(p: Published) -> tuple[int, int]:
    states = [d["state"] for n, d in p.record.items() if n.startswith("submitted_ballots/")]
    return states.count(1), states.count(2)


def test_board_lookups_and_nothing_but_the_record(web: Web, published: Published) -> None:
    p = published
    context = web.browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{web.url}/elections/{p.election_id}")
    _shot(page, "board")

    # Everything with a digit the page shows (ids, hashes, counts) is in the record's files, or is
    # derived from them: the ballot counts by state and the guardians' key fingerprints.
    cast, spoiled = _record_numbers(p)
    assert (page.inner_text("#cast-count"), page.inner_text("#spoiled-count")) == (str(cast), str(spoiled))
    assert (cast, spoiled) == (len(VOTES) - len(SPOILED), len(SPOILED))
    fingerprints = {
        key_fingerprint(d["election_public_key"]) for n, d in p.record.items() if n.startswith("guardians/")
    }
    shown = set(page.locator("code.fp").all_inner_texts())
    assert shown == fingerprints and len(shown) == 3

    def foreign(page_text: str) -> list[str]:
        for fp in fingerprints:
            page_text = page_text.replace(str(fp), " ")
        tokens = re.findall(r"[A-Za-z0-9_.:-]*\d[A-Za-z0-9_.:-]*", page_text)
        allowed = {str(cast), str(spoiled), "SHA-256"}  # the counts, and prose explaining the fingerprints
        return [
            t.strip(".:")
            for t in tokens
            if t.strip(".:") not in allowed and t.strip(".:") not in p.record_text
        ]

    text_shown = page.inner_text("main")
    assert foreign(text_shown) == [], foreign(text_shown)
    assert "admin" not in text_shown and "job" not in text_shown.lower()
    # The results: each selection's count as tally.json has it.
    labels = _labels(p)
    tally = {
        sid: int(s["tally"])
        for c in p.record["tally.json"]["contests"].values()
        for sid, s in c["selections"].items()
    }
    rows = page.locator("table.counts tbody tr").all()
    assert len(rows) == len(labels) == 3
    for row in rows:
        name, votes = row.locator("td").all_inner_texts()
        assert int(votes) == tally[labels[name]], (name, votes)
    assert sum(tally.values()) == len(VOTES) - len(SPOILED)
    assert "Verified" in page.inner_text("#verdict")

    # A cast ballot's tracking code; a spoiled one's, with its decryption; an unknown code.
    assert "cast" in _lookup(page, p.cast_code)
    result = _lookup(page, p.spoiled_code)
    assert "spoiled" in result and p.spoiled_id in result
    decryption = p.record[f"spoiled_ballots/spoiled_ballot_{p.spoiled_id}.json"]["contests"]
    votes = {sid: int(s["tally"]) for c in decryption.values() for sid, s in c["selections"].items()}
    for row in page.locator("#lookup-result table tbody tr").all():
        name, n = row.locator("td").all_inner_texts()
        assert votes[labels[name]] == int(n), (name, n)
    assert sum(int(n) for n in page.locator("#lookup-result td.num").all_inner_texts()) == 1
    assert foreign(page.inner_text("main")) == []
    _shot(page, "board-spoiled-lookup")
    assert "Not found" in _lookup(page, "00" * 32)
    page.set_viewport_size(PHONE)
    page.goto(f"{web.url}/elections/{p.election_id}/track?code={p.cast_code}")
    _shot(page, "board-phone")
    context.close()

    # The console's elections page shows it too (a phone's width).
    page = _login(web, PHONE)
    assert "decrypted" in page.inner_text("main")
    _shot(page, "console-elections-phone")
    page.set_viewport_size(DESKTOP)
    _shot(page, "console-elections")
    page.goto(web.url + "/console/queues")
    assert "tally.queue" in page.inner_text("#queues")
    _shot(page, "console-queues")
    page.context.close()


def test_board_lookup_rate_limit_answers_429_with_retry_after(web: Web, published: Published) -> None:
    from fastapi.testclient import TestClient

    settings = web.settings.model_copy(update={"board_lookups_per_minute": 3})
    with TestClient(create_app(settings)) as c:
        path = f"/elections/{published.election_id}/track"
        answers = [c.get(path, params={"code": published.cast_code}).status_code for _ in range(3)]
        assert answers == [200, 200, 200]
        r = c.get(path, params={"code": published.cast_code})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert "Too many lookups" in r.text
        assert c.get(f"/elections/{published.election_id}").status_code == 200  # the board itself is not
