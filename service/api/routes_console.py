"""The operator console (admins only): thin routes over ``service.jobs.console`` and
``service.jobs.redrive``, behind the session cookie of ``service.security.console_session``.

HTML pages without a valid session redirect to ``/console/login``; the JSON the pages poll
(``/console/api/...``) answers 401 instead. Every POST but the login checks the CSRF token.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any
from urllib.parse import parse_qs

import jwt
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from service.api.deps import AppContext, Ctx
from service.api.types import Id
from service.api.web import page_headers, render
from service.errors import DomainError, Forbidden, Invalid, Unauthorized
from service.jobs import console
from service.jobs.redrive import redrive_job
from service.security.auth import decode_token
from service.security.console_session import COOKIE, CSRF_FIELD, CSRF_HEADER, ConsoleSession

log = logging.getLogger(__name__)
router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)

LOGIN = "/console/login"
MAX_FORM_BYTES = 16 * 1024


def _session(request: Request, ctx: AppContext) -> ConsoleSession:
    return ctx.console_keys.read(request.cookies.get(COOKIE))


def _to_login() -> RedirectResponse:
    return RedirectResponse(LOGIN, status_code=303, headers=page_headers(private=True))


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first value of each); no multipart, nothing large."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Invalid("the form is too large")
    if not body or "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return {}
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Invalid("the form cannot be read") from exc
    return {k: v[0] for k, v in fields.items()}


def _page(
    request: Request, ctx: AppContext, session: ConsoleSession, template: str, **context: Any
) -> HTMLResponse:
    s = ctx.settings
    return render(
        request,
        template,
        {
            "csrf": ctx.console_keys.csrf_token(session),
            "operator": session.subject,
            "ray_url": s.ray_dashboard_url,
            "grafana_url": s.grafana_url,
            **context,
        },
        private=True,
    )


# ---- login and logout ----


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render(request, "login.html", {}, private=True)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, ctx: Ctx) -> Response:
    form = await _form(request)
    token = form.get("token", "").strip()
    try:
        principal = decode_token(ctx.settings, token, key=ctx.jwt_key)
        expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
        value, max_age = ctx.console_keys.issue(principal, expires, ctx.settings.console_session_minutes)
    except DomainError as exc:
        status_code = 403 if isinstance(exc, Forbidden) else 401
        message = (
            "This console is for operators: a guardian's token cannot open it."
            if status_code == 403
            else "That token is not valid (or has expired)."
        )
        return render(request, "login.html", {"error": message}, status_code=status_code, private=True)
    log.info("console: %s logged in", principal.subject)
    response = RedirectResponse("/console", status_code=303, headers=page_headers(private=True))
    response.set_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request, ctx: Ctx) -> Response:
    try:
        session = _session(request, ctx)
    except Unauthorized:
        return _to_login()
    await _check_csrf(request, ctx, session)
    response = _to_login()
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
    return response


async def _check_csrf(request: Request, ctx: AppContext, session: ConsoleSession) -> None:
    sent = request.headers.get(CSRF_HEADER) or (await _form(request)).get(CSRF_FIELD)
    ctx.console_keys.check_csrf(session, sent)


# ---- pages ----


@router.get("", response_class=HTMLResponse)
def elections_page(request: Request, ctx: Ctx) -> Response:
    try:
        session = _session(request, ctx)
    except Unauthorized:
        return _to_login()
    with ctx.tx() as s:
        rows = console.elections(s)
    return _page(request, ctx, session, "console_elections.html", elections=rows, nav="elections")


def _filters(election_id: int | None, state: str | None, kind: str | None) -> dict[str, Any]:
    if state and state not in console.JOB_STATES:
        raise Invalid(f"unknown job state {state[:32]!r}")
    if kind and kind not in console.JOB_KINDS:
        raise Invalid(f"unknown job kind {kind[:32]!r}")
    return {"election_id": election_id, "state": state or None, "kind": kind or None}


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    ctx: Ctx,
    election_id: Annotated[Id | None, Query()] = None,
    state: Annotated[str | None, Query(max_length=32)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    try:
        session = _session(request, ctx)
    except Unauthorized:
        return _to_login()
    filters = _filters(election_id, state, kind)
    with ctx.tx() as s:
        rows = console.jobs(s, **filters, stuck_after=ctx.settings.stuck_after_seconds)
    return _page(
        request,
        ctx,
        session,
        "console_jobs.html",
        jobs=rows,
        filters=filters,
        states=console.JOB_STATES,
        kinds=console.JOB_KINDS,
        nav="jobs",
    )


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: uuid.UUID, ctx: Ctx) -> Response:
    try:
        session = _session(request, ctx)
    except Unauthorized:
        return _to_login()
    with ctx.tx() as s:
        doc = console.job(s, job_id, stuck_after=ctx.settings.stuck_after_seconds)
    return _page(request, ctx, session, "console_job.html", job=doc, nav="jobs")


def _queues(ctx: AppContext) -> dict[str, Any]:
    with ctx.tx() as s:
        backlog = console.outbox_backlog(s)
        by_operation = console.outbox_by_operation(s)
        running = console.running_by_operation(s)
    try:
        queues, broker_error = ctx.queue_depths(), None
    except Exception as exc:  # the broker away: the page still shows the database's side
        queues, broker_error = [], f"the broker cannot be read ({type(exc).__name__})"
    for q in queues:
        q.setdefault("unacked", None)
        q["running"] = running.get(q["operation"], 0)
    return {
        "queues": queues,
        "brokerError": broker_error,
        "outboxByOperation": by_operation,
        "outboxByJob": backlog,
    }


@router.get("/queues", response_class=HTMLResponse)
def queues_page(request: Request, ctx: Ctx) -> Response:
    try:
        session = _session(request, ctx)
    except Unauthorized:
        return _to_login()
    return _page(request, ctx, session, "console_queues.html", q=_queues(ctx), nav="queues")


# ---- actions ----


@router.post("/jobs/{job_id}/redrive")
async def redrive(request: Request, job_id: uuid.UUID, ctx: Ctx) -> Response:
    try:
        session = _session(request, ctx)
    except Unauthorized:
        if CSRF_HEADER.lower() in request.headers:
            raise
        return _to_login()
    await _check_csrf(request, ctx, session)
    ctx.limiter.check(session.subject)
    with ctx.tx() as s:
        n = redrive_job(s, job_id)
    log.info("console: %s re-drove %d chunk(s) of job %s", session.subject, n, job_id)
    if CSRF_HEADER.lower() in request.headers:  # the page's script
        return JSONResponse({"jobId": str(job_id), "redriven": n}, headers=page_headers(private=True))
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303, headers=page_headers(private=True))


# ---- what the pages poll ----


@router.get("/api/jobs")
def jobs_json(
    request: Request,
    ctx: Ctx,
    election_id: Annotated[Id | None, Query()] = None,
    state: Annotated[str | None, Query(max_length=32)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
) -> JSONResponse:
    _session(request, ctx)
    filters = _filters(election_id, state, kind)
    with ctx.tx() as s:
        rows = console.jobs(s, **filters, stuck_after=ctx.settings.stuck_after_seconds)
    return JSONResponse(rows, headers=page_headers(private=True))


@router.get("/api/jobs/{job_id}")
def job_json(request: Request, job_id: uuid.UUID, ctx: Ctx) -> JSONResponse:
    _session(request, ctx)
    with ctx.tx() as s:
        doc = console.job(s, job_id, stuck_after=ctx.settings.stuck_after_seconds)
    return JSONResponse(doc, headers=page_headers(private=True))


@router.get("/api/queues")
def queues_json(request: Request, ctx: Ctx) -> JSONResponse:
    _session(request, ctx)
    return JSONResponse(_queues(ctx), headers=page_headers(private=True))
