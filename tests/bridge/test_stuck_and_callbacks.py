"""Stuck jobs and completion callbacks (issue 12), through the real relay, RabbitMQ, executor and Ray.

Stuck: a job whose chunks wait with no consumer is flagged after ``stuck_after`` (1 s here), shown in its
status, the metric and ``amarvote jobs list --stuck``, the reconciler's note is recorded, and the flag
drops once chunks end. Callbacks: a receiver on 127.0.0.1 that refuses the first attempts still gets
exactly one accepted, correctly signed notification per job end, for a COMPLETED and a FAILED job.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bridge.callback_sender import CallbackConfig, CallbackSender, deliver_callbacks
from bridge.reconciler import Reconciler, reconcile_once
from service.api.metrics import JobsByState
from service.db.models import ElectionJob, JobCallback
from service.db.session import make_engine
from service.jobs import callbacks
from service.jobs.status import get_job, job_document
from tests.bridge.helpers_bridge import InThread, job_ended, job_row, make_tally_job, wait_for
from tests.bridge.test_fairness import fair_pipeline
from tests.cli.run import amarvote

pytestmark = pytest.mark.services
SECRET = b"callback-test-secret-0123456789abcdef"


def status_doc(factory, job_id, stuck_after: float) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with factory() as s:
        return job_document(s, get_job(s, job_id), stuck_after=stuck_after)


def test_stuck_job_flagged_noted_listed_and_unflagged(
    settings, factory, ray_local, clean, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=6, chunk_size=1, metadata={"sleep": 0.3})
    # No consumer: nothing ends. Flagged once a second has passed with no progress.
    wait_for(lambda: status_doc(factory, job_id, 1.0)["stuck"], timeout=30)
    assert status_doc(factory, job_id, 600.0)["stuck"] is False  # the threshold is the setting's

    engine = make_engine(settings.database_url)
    try:
        families = {f.name: f for f in JobsByState(engine, stuck_after=1.0).collect()}
        samples = {s.labels["operation"]: s.value for s in families["amarvote_jobs_stuck"].samples}
        assert samples["TALLY"] == 1 and samples["COMBINE_DECRYPTION"] == 0
    finally:
        engine.dispose()

    env = {"AMARVOTE_DATABASE_URL": settings.database_url, "AMARVOTE_STUCK_AFTER_SECONDS": "1"}
    listed = amarvote("jobs", "list", "--stuck", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and str(job_id) in listed.stdout and "STUCK" in listed.stdout, listed
    env["AMARVOTE_STUCK_AFTER_SECONDS"] = "600"
    listed = amarvote("jobs", "list", "--stuck", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and str(job_id) not in listed.stdout, listed

    reconcile_once(factory, stale_after=timedelta(seconds=3), stuck_after=timedelta(seconds=1))
    doc = status_doc(factory, job_id, 1.0)
    assert doc["reconcilerNote"].startswith("no chunk ended for"), doc
    assert "6 pending" in doc["reconcilerNote"] and "waiting for a consumer" in doc["reconcilerNote"]
    assert doc["reconcilerNotedAt"]

    # A consumer starts: chunks end (each takes 0.3 s, so several land well within a second) and the
    # flag drops while the job still runs; at the end a terminal job is never stuck.
    with fair_pipeline(settings, factory):
        wait_for(lambda: not status_doc(factory, job_id, 1.0)["stuck"], timeout=90)
        wait_for(job_ended(factory, job_id), timeout=90)
    doc = status_doc(factory, job_id, 1.0)
    assert (doc["status"], doc["stuck"]) == ("COMPLETED", False)


class Receiver:
    """An HTTP receiver on 127.0.0.1 that answers 503 to the first ``fail_first`` requests of each job."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: dict[str, list[tuple[int, dict[str, str], bytes]]] = defaultdict(list)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                job = json.loads(body)["jobId"]
                seen = receiver.requests[job]
                code = 503 if len(seen) < receiver.fail_first else 200
                seen.append((code, dict(self.headers.items()), body))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=2) as r:
        yield r


def test_one_signed_notification_per_job_end_despite_failed_attempts(
    settings, factory, ray_local, clean, receiver
) -> None:  # type: ignore[no-untyped-def]
    config = CallbackConfig(secret=SECRET, allowed_urls=[receiver.url], max_attempts=5, backoff_seconds=0.1)
    _, ok = make_tally_job(factory, ballots=4, chunk_size=2)
    _, bad = make_tally_job(factory, ballots=4, chunk_size=2, metadata={"poison": [2]})
    _, silent = make_tally_job(factory, ballots=2, chunk_size=2)  # no callback URL: nothing sent
    with factory.begin() as s:
        for job_id in (ok, bad):
            s.execute(
                update(ElectionJob)
                .where(ElectionJob.job_id == job_id)
                .values(callback_url=receiver.url + str(job_id))
            )
    reconciler = Reconciler(factory, interval=0.5, stale_after=timedelta(seconds=3))
    sender = CallbackSender(factory, config, interval=0.1)
    with fair_pipeline(settings, factory), InThread(reconciler), InThread(sender):
        for job_id in (ok, bad, silent):
            wait_for(job_ended(factory, job_id), timeout=90)

        def delivered() -> bool:
            return all(status_doc(factory, j, 600)["callback"]["state"] == "DELIVERED" for j in (ok, bad))

        wait_for(delivered, timeout=60)
    assert deliver_callbacks(factory, config) == 0  # nothing left to send: no second notification

    assert set(receiver.requests) == {str(ok), str(bad)}
    for job_id, end in ((ok, "COMPLETED"), (bad, "FAILED")):
        assert job_row(factory, job_id).status == end
        seen = receiver.requests[str(job_id)]
        assert [code for code, _, _ in seen] == [503, 503, 200]  # one accepted, after two refused
        bodies = {body for _, _, body in seen}
        assert len(bodies) == 1  # every attempt the same notification, the same bytes
        deliveries = {h["X-Amarvote-Delivery"] for _, h, _ in seen}
        assert len(deliveries) == 1
        for _, headers, body in seen:
            stamp, signature = headers["X-Amarvote-Timestamp"], headers["X-Amarvote-Signature"]
            assert signature.startswith("sha256=")
            assert callbacks.verify(SECRET, stamp, body, signature)
            assert not callbacks.verify(b"another-secret-0123456789abcdef-xx", stamp, body, signature)
            assert not callbacks.verify(SECRET, str(int(stamp) + 1), body, signature)
        doc = json.loads(next(iter(bodies)))
        assert (doc["jobId"], doc["status"]) == (str(job_id), end)
        assert SECRET.decode() not in next(iter(bodies)).decode()
        state = status_doc(factory, job_id, 600)["callback"]
        assert (state["state"], state["attempts"], state["jobStatus"]) == ("DELIVERED", 3, end)
    with factory() as s:
        assert s.query(JobCallback).count() == 2
