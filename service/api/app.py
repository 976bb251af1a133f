"""The FastAPI application: ``create_app(settings)``; ``uvicorn service.api.app:app`` serves the default."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.api import (
    errors,
    routes_board,
    routes_ceremony,
    routes_console,
    routes_elections,
    routes_jobs,
    routes_uploads,
    routes_verify,
)
from service.api.body_limit import BodyLimit
from service.api.deps import AppContext, admin_gate, known_query_only
from service.api.metrics import RequestMetrics, register_jobs_by_state
from service.api.web import STATIC
from service.db.session import in_transaction, make_engine
from service.elections.pending import PendingBallots
from service.jobs.console import outbox_queue_depths
from service.security.console_session import ConsoleKeys
from service.security.kdf_gate import kdf_gate
from service.security.ratelimit import RateLimiter
from service.security.sealing import KdfParams
from service.security.secrets import api_keys
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    database: str


def create_app(
    settings: Settings | None = None, *, queue_depths: Callable[[], list[dict[str, Any]]] | None = None
) -> FastAPI:
    """The API and its pages. ``queue_depths`` reads the broker's queues for the console (``cli/api.py``
    passes the configured broker's; without it the console shows the outbox backlog)."""
    settings = settings or get_settings()
    # Refused before anything connects: no JWT secret with a database URL, or a secret under 32 bytes.
    secret, token_key = api_keys(settings)
    engine = make_engine(settings.sqlalchemy_url)
    auto = settings.auto_migrate
    if auto is None:
        auto = make_url(settings.sqlalchemy_url).get_backend_name() == "sqlite"
    if auto:
        from service.db.migrate import upgrade

        upgrade(settings.sqlalchemy_url, engine=engine)

    pending = PendingBallots(settings.pending_ballot_seconds, settings.max_pending_ballots)

    async def sweep() -> None:
        # Expired pending ballots are dropped on every access too; this drops them when no one calls.
        while True:
            await asyncio.sleep(min(30.0, settings.pending_ballot_seconds / 2))
            pending.purge()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(sweep())
        try:
            yield
        finally:
            sweeper.cancel()
            pending.clear()
            engine.dispose()

    app = FastAPI(
        title="amarvote",
        version="0.1.0",
        description="ElectionGuard compute service: elections, ballots, and tally/decryption/combine jobs.",
        lifespan=lifespan,
    )
    if settings.server_secret is None and make_url(settings.sqlalchemy_url).get_backend_name() != "sqlite":
        # A generated secret lives in one host's data directory: other API replicas and the bridge's
        # workers could not open the key escrow it seals. Production sets AMARVOTE_SERVER_SECRET.
        log.warning("AMARVOTE_SERVER_SECRET is not set: using a secret generated into the data directory")
    register_jobs_by_state(engine, settings.stuck_after_seconds)
    app.state.ctx = AppContext(
        settings=settings,
        engine=engine,
        server_secret=secret,
        jwt_key=token_key,
        limiter=RateLimiter(settings.job_rate_limit_per_minute),
        kdf=KdfParams(settings.kdf_time_cost, settings.kdf_memory_kib, settings.kdf_parallelism),
        pending=pending,
        kdf_gate=kdf_gate(settings),
        console_keys=ConsoleKeys(token_key),
        board_limiter=RateLimiter(settings.board_lookups_per_minute, what="tracking-code lookups"),
        record_limiter=RateLimiter(settings.board_record_downloads_per_minute, what="record downloads"),
        queue_depths=queue_depths or (lambda: in_transaction(engine, outbox_queue_depths)),
    )

    errors.install(app)

    @app.get(
        "/health",
        tags=["ops"],
        summary="Liveness and database reachability (no auth)",
        response_model=Health,
        responses={503: {"model": Health, "description": "The database is unreachable"}},
    )
    def health() -> JSONResponse:
        try:
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unreachable (%s)", type(exc).__name__)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": engine.dialect.name})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    # Every route may refuse in the one error model; routes add their own descriptions on top.
    strict = [Depends(known_query_only)]
    app.include_router(routes_elections.router, responses=errors.COMMON_ERRORS, dependencies=strict)
    app.include_router(routes_jobs.router, responses=errors.COMMON_ERRORS, dependencies=strict)
    app.include_router(routes_verify.router, responses=errors.COMMON_ERRORS, dependencies=strict)
    app.include_router(routes_ceremony.router, responses=errors.COMMON_ERRORS, dependencies=strict)
    app.include_router(routes_uploads.router, responses=errors.COMMON_ERRORS, dependencies=strict)
    app.include_router(routes_board.router, dependencies=strict)
    app.include_router(routes_console.router, dependencies=strict)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(RequestMetrics)
    # Outermost (added last): an oversized body is refused before any route, dependency or the token
    # check reads it; a bulk upload's larger limit is an admin's only (the route's own role).
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        large=(("/ballots/bulk", settings.max_bulk_body_bytes),),
        gate=admin_gate(app.state.ctx),
    )
    return app


def __getattr__(name: str) -> Any:
    # ``uvicorn service.api.app:app`` builds the app from the environment on first access only, so
    # importing this module (tests, the CLI) does not connect anywhere.
    if name == "app":
        return create_app()
    raise AttributeError(name)
