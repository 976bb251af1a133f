"""What routes depend on: the app's context (settings, engine, secrets, limiters) and the caller."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.types import Scope

from service.db.session import transaction
from service.elections.pending import PendingBallots
from service.errors import DomainError, Invalid, Unauthorized
from service.security.auth import Principal, decode_token, require_admin
from service.security.console_session import ConsoleKeys
from service.security.kdf_gate import KdfGate
from service.security.ratelimit import RateLimiter
from service.security.sealing import KdfParams
from service.settings import Settings


@dataclass(slots=True)
class AppContext:
    settings: Settings
    engine: Engine
    server_secret: bytes
    jwt_key: bytes
    limiter: RateLimiter
    kdf: KdfParams
    pending: PendingBallots
    kdf_gate: KdfGate
    console_keys: ConsoleKeys
    board_limiter: RateLimiter  # tracking-code lookups, per client address
    record_limiter: RateLimiter  # public record downloads, per client address
    # Every work queue's depth as dicts (bridge.broker.QueueDepth's fields): the composition root
    # (cli/api.py) passes the broker's reader; without one, the outbox backlog.
    queue_depths: Callable[[], list[dict[str, Any]]]

    def tx(self) -> AbstractContextManager[Session]:
        """One transaction on the app's engine (commit, or roll back on any error)."""
        return transaction(self.engine)


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


_bearer = HTTPBearer(auto_error=False, description="A JWT issued with service.security.auth.issue_token")


def _principal(ctx: AppContext, scheme: str, token: str) -> Principal:
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a bearer token is required")
    return decode_token(ctx.settings, token, key=ctx.jwt_key)


def get_principal(
    ctx: Annotated[AppContext, Depends(get_ctx)],
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return _principal(ctx, creds.scheme, creds.credentials) if creds else _principal(ctx, "", "")


def admin_gate(ctx: AppContext) -> Callable[[Scope], DomainError | None]:
    """For ``BodyLimit``: whether a request's token is an admin's, before its body is read (the checks,
    and errors, of ``get_principal`` and ``require_admin``)."""

    def check(scope: Scope) -> DomainError | None:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        try:
            require_admin(_principal(ctx, scheme, token.strip()))
        except DomainError as exc:
            return exc
        return None

    return check


Ctx = Annotated[AppContext, Depends(get_ctx)]
Caller = Annotated[Principal, Depends(get_principal)]


def _query_names(dependant: Any) -> set[str]:
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


_known_query: dict[int, frozenset[str]] = {}


def known_query_only(request: Request) -> None:
    """Refuse query parameters the route does not declare (a misspelt ``election_id`` would
    otherwise silently list every job)."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None or not request.query_params:
        return
    known = _known_query.get(id(dependant))
    if known is None:
        known = _known_query[id(dependant)] = frozenset(_query_names(dependant))
    if unknown := sorted(set(request.query_params) - known):
        shown = ", ".join(repr(name[:64]) for name in unknown[:5])
        raise Invalid(f"unknown query parameter(s): {shown}")
