"""Callback URLs are normalised before the allow-list check (issue 17).

``urllib.parse.urlsplit`` silently drops tabs and newlines (as WHATWG says), so a URL with one passed the
allow-list and then made httpx raise at every delivery; dot segments were not resolved, so
``/hooks/../admin/shutdown`` passed the ``/hooks/`` prefix and was delivered to ``/admin/shutdown``. Now
control and whitespace characters are refused, dot segments (``%2e`` too) are resolved before the
prefix check, and the normalised URL is the one stored. Refusals are 422s naming the reason and write
nothing. Real PostgreSQL; no bridge.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from helpers_service import api_settings, make_election, row_counts
from sqlalchemy import Engine

from service.db.models import ElectionJob
from service.db.session import session_factory
from service.errors import Invalid
from service.jobs import callbacks
from service.settings import Settings

ALLOWED = "http://127.0.0.1:8099/hooks/"


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(
        db_url,
        tmp_path_factory.mktemp("data"),
        callback_secret="test-callback-secret-0123456789abcdef",
        callback_allowed_urls=f"{ALLOWED}, https://backend.example.org/amarvote",
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8099/hooks/\t../x", "control or whitespace"),
        ("http://127.0.0.1:8099/hooks/\n../x", "control or whitespace"),
        ("http://127.0.0.1:8099/hooks/x\r\nX-Injected: 1", "control or whitespace"),
        ("http://127.0.0.1:8099/hooks/a b", "control or whitespace"),
        ("http://127.0.0.1:8099/hooks/\x00", "control or whitespace"),
        ("http://127.0.0.1:8099/hooks/\x7f", "control or whitespace"),
        ("http://127.0.\t0.1:8099/hooks/x", "control or whitespace"),
        ("http://127.0.0.1:8099/hooks/\u00a0x", "control or whitespace"),  # no-break space
        ("http://127.0.0.1:8099/hooks/\u2028x", "control or whitespace"),  # line separator
        ("http://127.0.0.1:8099/hooks/\u200bx", "control or whitespace"),  # zero-width space
        ("http://127.0.0.1:8099/hooks/\u00e9", "ASCII"),
        ("http://127.0.0.1:8099/hooks/../admin/shutdown", "outside"),
        ("http://127.0.0.1:8099/hooks/x/../../admin", "outside"),
        ("http://127.0.0.1:8099/hooks/%2e%2e/admin/shutdown", "outside"),
        ("http://127.0.0.1:8099/hooks/%2E%2e/admin", "outside"),
        ("http://127.0.0.1:8099/hooks/.%2e/admin", "outside"),
        ("http://127.0.0.1:8099/hooks/..", "outside"),
        ("http://127.0.0.1:8099/hooks/..%2fadmin", "encoded '/' or '\\'"),
        ("http://127.0.0.1:8099/hooks/..%5Cadmin", "encoded '/' or '\\'"),
        ("http://127.0.0.1:8099/hooks\\..\\admin", "backslash"),
        ("https://backend.example.org/amarvote-evil/x", "outside"),  # a prefix is a whole path segment
        ("http://127.0.0.1:bad/hooks/x", "port"),
        ("http:///hooks/x", "host"),
    ],
)
def test_a_callback_url_that_is_not_what_it_seems_is_refused_and_writes_nothing(
    client: TestClient, admin: dict[str, str], engine: Engine, url: str, reason: str
) -> None:
    eid = make_election(engine, ballots=4)
    before = row_counts(engine)
    for route in ("/api/tally/create", "/api/combine/decryption"):
        r = client.post(route, json={"election_id": eid, "callback_url": url}, headers=admin)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert "callback_url" in detail and reason in detail, detail
    assert row_counts(engine) == before


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("http://127.0.0.1:8099/hooks/a/../b?e=1", "http://127.0.0.1:8099/hooks/b?e=1"),
        ("http://127.0.0.1:8099/hooks/./%2e/x/%2E%2E/y", "http://127.0.0.1:8099/hooks/y"),
        ("HTTP://127.0.0.1:8099/hooks/%7Euser/%41", "http://127.0.0.1:8099/hooks/~user/A"),
        ("http://127.0.0.1:8099/hooks/%c3%a9?q=%2e%2e", "http://127.0.0.1:8099/hooks/%C3%A9?q=%2e%2e"),
        ("https://backend.example.org/amarvote", "https://backend.example.org/amarvote"),
    ],
)
def test_the_normalised_callback_url_is_what_is_stored(
    client: TestClient, admin: dict[str, str], engine: Engine, given: str, stored: str
) -> None:
    eid = make_election(engine, ballots=4)
    r = client.post("/api/tally/create", json={"election_id": eid, "callback_url": given}, headers=admin)
    assert r.status_code == 200, r.text
    job_id = r.json()["jobId"]
    with session_factory(engine)() as s:
        job = s.get(ElectionJob, job_id)
        assert job is not None and job.callback_url == stored
    assert client.get(f"/api/jobs/{job_id}/status", headers=admin).json()["callbackUrl"] == stored


def test_normalise_resolves_dot_segments_as_rfc_3986_says() -> None:
    # RFC 3986 section 5.4 examples of remove_dot_segments, on the path of one base.
    for path, resolved in [
        ("/a/b/c/./../../g", "/a/g"),
        ("/mid/content=5/../6", "/mid/6"),
        ("/a/b/../../../g", "/g"),  # never above the root
        ("/a/./b/.", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/a/..b/c.", "/a/..b/c."),  # not dot segments
        ("", "/"),
    ]:
        assert callbacks.normalise("http://h" + path) == "http://h" + resolved, path
    with pytest.raises(Invalid, match="control or whitespace"):
        callbacks.normalise("http://h/\x0b")
