"""One error model for every refusal, and the handlers that produce it.

Every 4xx and 503 answers ``ErrorBody``: ``detail`` is always a sentence; a malformed request also
carries ``errors``, where and what (never the offending input, which may be a passphrase). Errors
are declared once for all routes (``COMMON_ERRORS``, given to ``include_router``), so the OpenAPI
document says what the API returns.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.db.session import is_disconnect
from service.errors import DomainError, TooManyRequests, Unavailable

log = logging.getLogger(__name__)

# Seconds a client should wait while the database is away: about one reconnect of the pool.
DATABASE_RETRY_AFTER = 5


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """What every refusal carries: a reason safe to show a client; for a malformed request, the list
    of problems (where and what) as well."""

    detail: str
    errors: list[ValidationIssue] | None = None


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}


def errors(*codes: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route's own refusals: (status, when), all as ``ErrorBody``."""
    out: dict[int | str, dict[str, Any]] = {}
    for code, when in codes:
        out[code] = {"model": ErrorBody, "description": when}
        if code == 503:
            out[code]["headers"] = _RETRY_AFTER
    return out


COMMON_ERRORS = errors(
    (400, "The request is refused as it stands"),
    (401, "No bearer token, or an invalid or expired one"),
    (403, "The token does not allow this (not an admin, another election or guardian)"),
    (404, "No such election, guardian, ballot or job (or not visible to this caller)"),
    (409, "The election or job is in the wrong state for this, or the object already exists"),
    (
        413,
        "The request body is larger than AMARVOTE_MAX_BODY_BYTES"
        " (AMARVOTE_MAX_BULK_BODY_BYTES for an admin's bulk upload)",
    ),
    (422, "The request is malformed, out of bounds, or its content fails validation"),
    (429, "Too many requests: the caller's rate limit, or this process's pending ballots"),
    (503, "The database is unreachable, or every KDF slot is busy; nothing was changed: retry later"),
)


def error_response(status: int, detail: str, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    body = ErrorBody(detail=detail, **extra).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _issues(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic echoes the offending input: a passphrase or a credential file must never come back
    # in a response (or reach a log through one), so keep only where and what.
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg")),
            "type": str(e.get("type")),
        }
        for e in exc.errors()
    ]


# SQLSTATE -> reason (psycopg's message may quote the value, so it is never passed on).
_DATA_REASONS = {
    "22001": "a value is longer than its field allows",
    "22003": "a number is out of the range its field allows",
    "22021": "a string holds a character the database cannot store (NUL)",
    "22P05": "a string holds a character the database cannot store (NUL)",
    "22P02": "a value has the wrong form for its field",
}


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def install(app: FastAPI) -> None:
    """The handlers that turn every refusal into an ``ErrorBody``."""

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        retry_after = (
            getattr(exc, "retry_after", None) if isinstance(exc, Unavailable | TooManyRequests) else None
        )
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return error_response(exc.status_code, exc.reason, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        issues = _issues(exc)
        summary = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in issues[:10])
        more = f" (and {len(issues) - 10} more)" if len(issues) > 10 else ""
        return error_response(422, f"invalid request: {summary}{more}", errors=issues)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    # The transaction that raised has rolled back (service.db.session.transaction) before any of these
    # runs: a refusal changes nothing.
    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if is_disconnect(exc):
            log.warning(
                "%s %s: database unreachable (%s)", request.method, request.url.path, type(exc.orig).__name__
            )
            return _unavailable()
        state = _sqlstate(exc) or ""
        if isinstance(exc, IntegrityError):
            if state == "23505":
                return error_response(
                    409,
                    "this conflicts with an object that already exists (or was"
                    " just created by a concurrent request)",
                )
            return error_response(422, "the request refers to or makes data the database refuses")
        if isinstance(exc, DataError):
            return error_response(422, _DATA_REASONS.get(state, "a value does not fit its field"))
        raise exc  # our own SQL is wrong: a 500, logged with its traceback

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(_request: Request, _exc: PoolTimeout) -> JSONResponse:
        return _unavailable()


def _unavailable() -> JSONResponse:
    return error_response(
        503,
        "the database is unreachable; nothing was changed: retry later",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
    )
