"""One callback's bad URL or failed request counts against its own row only (issue 17).

A row stored before URLs were normalised (``http://host/hooks/\\t../x``: httpx raises ``InvalidURL``)
used to abort every delivery round, so it never reached FAILED and the rows behind it were never sent.
Here such rows sit first in the queue, beside three valid ones, and a local HTTP server on 127.0.0.1
receives the deliveries. Real PostgreSQL; no Ray, no broker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from bridge.callback_sender import CallbackConfig, deliver_callbacks
from service.db.models import CallbackState, JobCallback
from service.db.session import SessionFactory
from tests.bridge.helpers_bridge import make_tally_job

pytestmark = pytest.mark.services
SECRET = b"callback-test-secret-0123456789abcdef"


class Receiver:
    """Records the path and delivery id of every POST it gets, and answers 200."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def _add_rows(factory: SessionFactory, urls: list[str]) -> dict[str, int]:
    """One PENDING notification per URL, stored as given (as a row written before any check would be),
    due now and in this order; url -> row id."""
    _, job_id = make_tally_job(factory, ballots=1, chunk_size=1)
    ids = {}
    with factory.begin() as s:
        now = s.execute(text("SELECT now()")).scalar_one()
        for i, url in enumerate(urls):
            row = JobCallback(
                job_id=job_id,
                job_status="COMPLETED",
                url=url,
                payload=json.dumps({"jobId": str(job_id), "n": i}),
                state=CallbackState.PENDING.value,
                attempts=0,
                next_attempt_at=now - timedelta(minutes=10) + timedelta(seconds=i),
                created_at=now,
            )
            s.add(row)
            s.flush()
            ids[url] = row.id
    return ids


def _rows(factory: SessionFactory, ids: dict[str, int]) -> dict[str, JobCallback]:
    with factory() as s:
        by_id = {r.id: r for r in s.scalars(select(JobCallback).where(JobCallback.id.in_(ids.values())))}
    return {url: by_id[i] for url, i in ids.items()}


def test_bad_stored_urls_fail_alone_and_the_valid_ones_are_delivered(
    factory: SessionFactory, clean: Any, receiver: Receiver
) -> None:
    hooks = receiver.base + "/hooks/"
    bad = [hooks + "\t../x", hooks + "../admin/shutdown", hooks + "%2e%2e/admin/shutdown", hooks + "a\nb"]
    good = [hooks + "one", hooks + "two/../three", hooks + "four"]
    ids = _add_rows(factory, bad + good)  # the bad rows first: due before the valid ones
    config = CallbackConfig(secret=SECRET, allowed_urls=[hooks], max_attempts=3, backoff_seconds=0)

    assert deliver_callbacks(factory, config) == 3

    assert sorted(receiver.paths) == ["/hooks/four", "/hooks/one", "/hooks/three"]  # the normalised URL
    rows = _rows(factory, ids)
    for url in good:
        assert rows[url].state == CallbackState.DELIVERED.value, url
    for url in bad:
        # A URL that cannot be delivered safely never will be: failed at once, saying why.
        assert (rows[url].state, rows[url].attempts) == (CallbackState.FAILED.value, 1), url
    assert "control or whitespace" in (rows[bad[0]].last_error or "")
    assert "outside" in (rows[bad[1]].last_error or "")
    assert deliver_callbacks(factory, config) == 0  # nothing is left due
    assert len(receiver.paths) == 3


class _Breaking(httpx.BaseTransport):
    """The real transport, except that a request to ``/hooks/boom`` raises while it is being sent."""

    def __init__(self, error: Exception) -> None:
        self.inner = httpx.HTTPTransport()
        self.error = error

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/hooks/boom":
            raise self.error
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(
    "error",
    [httpx.InvalidURL("Invalid non-printable ASCII character in URL"), RuntimeError("client bug")],
    ids=["InvalidURL", "RuntimeError"],
)
def test_an_error_sending_one_callback_counts_against_its_row_until_it_fails(
    factory: SessionFactory, clean: Any, receiver: Receiver, error: Exception
) -> None:
    hooks = receiver.base + "/hooks/"
    boom, good = hooks + "boom", [hooks + "one", hooks + "two", hooks + "three"]
    ids = _add_rows(factory, [boom, *good])
    config = CallbackConfig(secret=SECRET, allowed_urls=[hooks], max_attempts=3, backoff_seconds=0)
    with httpx.Client(transport=_Breaking(error), follow_redirects=False) as client:
        assert deliver_callbacks(factory, config, client) == 3  # the row before them did not stop them
        states = []
        for _ in range(2):
            assert deliver_callbacks(factory, config, client) == 0
            states.append(_rows(factory, ids)[boom].state)
        assert deliver_callbacks(factory, config, client) == 0  # FAILED: no longer due
    assert states == [CallbackState.PENDING.value, CallbackState.FAILED.value]
    rows = _rows(factory, ids)
    assert (rows[boom].state, rows[boom].attempts) == (CallbackState.FAILED.value, 3)
    assert type(error).__name__ in (rows[boom].last_error or "")
    assert all(rows[u].state == CallbackState.DELIVERED.value for u in good)
    assert sorted(receiver.paths) == ["/hooks/one", "/hooks/three", "/hooks/two"]
