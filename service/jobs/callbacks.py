"""Completion callbacks: every write to the ``job_callback`` table, the allow-list and the signature.

When a job with a ``callback_url`` ends (COMPLETED or FAILED), :func:`enqueue` writes one row in the
transaction that ends it (``service.jobs.transitions._settle_job``), so there is exactly one notification
per end (a re-drive that ends the job again makes another). The row holds the exact bytes to send: the
job's status document as it was when it ended. The callback sender (``bridge.callback_sender``) delivers
due rows, never a chunk worker: :func:`take_due` leases a row for an attempt, the POST happens outside
any transaction, :func:`record` writes the outcome (a retry with exponential backoff,
``service.jobs.clock.backoff``, or FAILED once ``max_attempts`` are spent). A crash between the POST and
:func:`record` sends it again after the lease: receivers dedupe on ``X-Amarvote-Delivery``. A job's
status shows its last notification's state (``service.jobs.status.callback_state``).

The signature (``X-Amarvote-Signature: sha256=<hex>``) is HMAC-SHA256 under the callback secret over
``<X-Amarvote-Timestamp>.<raw body>``: covering the timestamp lets a receiver refuse a replayed old
notification, which a signature over the body alone would not.

Callback URLs are normalised (:func:`normalise`: control and whitespace characters refused, dot segments
resolved) and checked against ``callback_allowed_urls`` at job creation (422 otherwise), and again before
each delivery, which calls the normalised URL: the server never sends a request to a host or path an
operator did not list.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import string
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import CallbackState, ElectionJob, JobCallback
from service.errors import Invalid
from service.jobs.clock import backoff, db_now
from service.jobs.status import job_document
from service.settings import Settings

SIGNATURE_HEADER = "X-Amarvote-Signature"
TIMESTAMP_HEADER = "X-Amarvote-Timestamp"
DELIVERY_HEADER = "X-Amarvote-Delivery"
ATTEMPT_LEASE = timedelta(seconds=60)  # a delivery attempt not recorded by then is tried again
MAX_ERROR_CHARS = 500


# RFC 3986 unreserved characters: percent-encoding one of them changes nothing, so ``%2e%2e`` is ``..``.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: ``/a/b/../c/./d`` is ``/a/c/d``; never above the root."""
    out: list[str] = []
    rest = path
    while rest:
        if rest.startswith("../"):
            rest = rest[3:]
        elif rest.startswith("./"):
            rest = rest[2:]
        elif rest.startswith("/./"):
            rest = rest[2:]
        elif rest == "/.":
            rest = "/"
        elif rest.startswith("/../") or rest == "/..":
            rest = "/" + rest[4:]
            if out:
                out.pop()
        elif rest in (".", ".."):
            rest = ""
        else:
            end = rest.find("/", 1)
            segment = rest if end < 0 else rest[:end]
            out.append(segment)
            rest = rest[len(segment) :]
    return "".join(out)


def _normalise_path(path: str) -> str:
    if _BAD_PERCENT.search(path):
        raise Invalid("callback_url has a '%' not followed by two hex digits")

    def decode(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        if char in "/\\":
            # A receiver that decodes %2F before routing would see other segments than the prefix check.
            raise Invalid("callback_url must not contain an encoded '/' or '\\' (%2F, %5C)")
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    return remove_dot_segments(_PERCENT.sub(decode, path)) or "/"


def normalise(url: str) -> str:
    """``url`` as it will be stored and called, or ``Invalid`` (422) naming why it cannot be.

    What the allow-list checks must be exactly what is requested. ``urlsplit`` silently drops tabs and
    newlines (WHATWG) where httpx refuses them, and a receiver resolves ``..`` (``%2e%2e`` too) where a
    prefix match does not: so control and whitespace characters are refused, and the path's dot
    segments are resolved here, before any check. The fragment, never sent, is dropped.
    """
    for i, char in enumerate(url):
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            raise Invalid(
                f"callback_url contains a control or whitespace character (U+{ord(char):04X} at {i})"
            )
        if not char.isascii():
            raise Invalid("callback_url must be ASCII: percent-encode other characters (and punycode a host)")
    if "\\" in url:
        raise Invalid("callback_url must not contain a backslash (some receivers read it as '/')")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Invalid(f"callback_url has an invalid port or host ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Invalid("callback_url must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise Invalid("callback_url must not carry credentials")
    host = (parts.hostname or "").lower()
    if not host:
        raise Invalid("callback_url has no host")
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{_normalise_path(parts.path)}{query}"


def _origin(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    scheme = parts.scheme
    return scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80), parts.path


def _under(path: str, prefix: str) -> bool:
    """Whether ``path`` is ``prefix`` or below it, by whole segments (``/hooks`` never admits
    ``/hooks-evil``)."""
    return path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/")


def allowed(url: str, prefixes: list[str]) -> bool:
    """Whether the normalised ``url`` falls under one of ``prefixes``: the same scheme, host and port,
    and a path under the prefix's (so ``http://a:80`` never admits ``http://a:8080`` or ``http://a.evil``)."""
    try:
        scheme, host, port, path = _origin(normalise(url))
    except Invalid:
        return False
    for prefix in prefixes:
        try:
            p_scheme, p_host, p_port, p_path = _origin(normalise(prefix))
        except Invalid:
            continue  # an operator's malformed prefix admits nothing
        if (scheme, host, port) == (p_scheme, p_host, p_port) and _under(path, p_path):
            return True
    return False


def check_url(settings: Settings, url: str | None) -> str | None:
    """The normalised callback URL a job may carry (what is stored and later called), or ``Invalid``
    (422) naming why not; None stays None."""
    if url is None:
        return None
    normalised = normalise(url)
    if settings.callback_secret is None:
        raise Invalid("callbacks are not configured on this server (no AMARVOTE_CALLBACK_SECRET)")
    if not allowed(normalised, settings.callback_prefixes):
        resolved = f" (resolved to {normalised})" if normalised != url else ""
        raise Invalid(
            f"callback_url{resolved} is outside the server's allow-list (AMARVOTE_CALLBACK_ALLOWED_URLS)"
        )
    return normalised


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What a client may choose for a job it creates, beyond the operation's own fields."""

    priority: int = 0
    callback_url: str | None = None

    def apply(self, job: ElectionJob) -> None:
        job.priority = self.priority
        job.callback_url = self.callback_url


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """For receivers (and the tests): the signature is this body's, at this timestamp."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def enqueue(session: Session, job: ElectionJob) -> None:
    """The notification of ``job``'s end, if it has a callback URL (in the transaction that ends it)."""
    if not job.callback_url:
        return
    session.flush()
    # An explicit threshold: this runs in the chunk's transaction (maybe on a Ray worker), which must not
    # depend on reading the process's settings; an ended job is never stuck anyway.
    doc = job_document(session, job, stuck_after=timedelta(0))
    doc.pop("callback", None)  # the delivery's own state is not part of what it delivers
    now = db_now(session)
    session.add(
        JobCallback(
            job_id=job.job_id,
            job_status=job.status,
            url=job.callback_url,
            payload=json.dumps(doc, sort_keys=True, default=str),
            state=CallbackState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class Notification:
    """A due notification, leased for one attempt: ids, the URL and the bytes (never the secret)."""

    id: int
    job_id: uuid.UUID
    url: str
    body: bytes
    attempt: int


def take_due(session: Session, limit: int = 20) -> list[Notification]:
    """Lease up to ``limit`` due notifications for one attempt each (``SKIP LOCKED``: several callback
    senders may run); the attempt is counted now, so one that never reports back still moves toward the
    limit."""
    now = db_now(session)
    rows = list(
        session.scalars(
            select(JobCallback)
            .where(JobCallback.state == CallbackState.PENDING.value, JobCallback.next_attempt_at <= now)
            .order_by(JobCallback.next_attempt_at, JobCallback.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    for row in rows:
        row.attempts += 1
        row.next_attempt_at = now + ATTEMPT_LEASE
    return [Notification(r.id, r.job_id, r.url, r.payload.encode(), r.attempts) for r in rows]


def record(
    session: Session,
    delivery_id: int,
    error: str | None,
    *,
    max_attempts: int,
    backoff_seconds: float,
) -> str | None:
    """The outcome of one attempt (``error`` None: the receiver answered 2xx); the row's new state."""
    row = session.get(JobCallback, delivery_id, with_for_update=True)
    if row is None or row.state != CallbackState.PENDING.value:
        return None
    now = db_now(session)
    if error is None:
        row.state = CallbackState.DELIVERED.value
        row.delivered_at = now
        row.last_error = None
    else:
        row.last_error = error[:MAX_ERROR_CHARS]
        if row.attempts >= max_attempts:
            row.state = CallbackState.FAILED.value
        else:
            row.next_attempt_at = now + backoff(backoff_seconds, row.attempts)
    return row.state
