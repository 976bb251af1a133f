"""The callback sender: delivers due completion callbacks, and nothing else.

Every ``interval`` (a second by default) it takes the due notifications (``service.jobs.callbacks``) and
POSTs each once: signed, outside any transaction, never from a chunk worker; the outcome is recorded on
its row, which retries with backoff from the table or FAILS once its attempts are spent. Several senders
may run: each notification is leased to one for an attempt (``SKIP LOCKED``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from bridge.error_text import describe_error
from bridge.loop import Loop
from service.db.session import SessionFactory, in_transaction
from service.errors import Invalid
from service.jobs import callbacks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallbackConfig:
    """How completion callbacks are delivered (``Settings`` fields of the same names)."""

    secret: bytes
    allowed_urls: list[str]
    max_attempts: int = 8
    backoff_seconds: float = 5.0
    timeout_seconds: float = 5.0


def _attempt(http: Any, config: CallbackConfig, n: callbacks.Notification) -> tuple[str | None, int]:
    """One POST of one notification: (None, _) when accepted, else (the error, the attempt limit it
    counts against; 0 fails the row now: a URL that is refused will always be)."""
    try:
        url = callbacks.normalise(n.url)  # a row stored before URLs were normalised at creation
    except Invalid as exc:
        return f"the callback URL is refused: {exc.reason}", 0
    if not callbacks.allowed(url, config.allowed_urls):
        return f"the callback URL ({url}) is outside the allow-list", 0
    try:
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            callbacks.TIMESTAMP_HEADER: stamp,
            callbacks.SIGNATURE_HEADER: callbacks.sign(config.secret, stamp, n.body),
            callbacks.DELIVERY_HEADER: str(n.id),
        }
        response = http.post(url, content=n.body, headers=headers)
    except Exception as exc:
        # Whatever goes wrong with one request (httpx.InvalidURL, a transport or client bug) is this
        # row's alone: it must still move toward FAILED, and the rest of the round must still be sent.
        return describe_error(exc), config.max_attempts
    if 200 <= response.status_code < 300:
        return None, config.max_attempts
    return f"HTTP {response.status_code}", config.max_attempts


def _recorder(
    notification_id: int, error: str | None, max_attempts: int, backoff_seconds: float
) -> Callable[[Session], str | None]:
    return lambda s: callbacks.record(
        s, notification_id, error, max_attempts=max_attempts, backoff_seconds=backoff_seconds
    )


def deliver_callbacks(factory: SessionFactory, config: CallbackConfig, client: Any = None) -> int:
    """One attempt at each due notification; returns how many were delivered (2xx). An error of one
    notification is recorded on its row and the round goes on."""
    import httpx

    due = in_transaction(factory, callbacks.take_due)
    if not due:
        return 0
    own = client is None
    http = client or httpx.Client(timeout=config.timeout_seconds, follow_redirects=False)
    delivered = 0
    try:
        for n in due:
            error, attempts = _attempt(http, config, n)
            state = in_transaction(factory, _recorder(n.id, error, attempts, config.backoff_seconds))
            if error is None:
                delivered += 1
            else:
                log.warning("callback of job %s, attempt %d: %s (now %s)", n.job_id, n.attempt, error, state)
    finally:
        if own:
            http.close()
    return delivered


class CallbackSender(Loop):
    """Every ``interval``: one attempt at each due completion callback."""

    def __init__(self, factory: SessionFactory, config: CallbackConfig, *, interval: float = 1.0) -> None:
        super().__init__(interval)
        self.factory = factory
        self.config = config

    def run_once(self) -> int:
        return deliver_callbacks(self.factory, self.config)
