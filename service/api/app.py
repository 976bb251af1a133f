"""The FastAPI application: ``create_app(settings)``; ``uvicorn service.api.app:app`` serves the default."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.api import routes_elections, routes_jobs
from service.api.deps import AppContext
from service.api.metrics import LATENCY, REQUESTS, register_jobs_by_state
from service.db.session import make_engine
from service.elections.pending import PendingBallots
from service.errors import DomainError, Unavailable
from service.security.kdf_gate import kdf_gate
from service.security.ratelimit import RateLimiter
from service.security.sealing import KdfParams
from service.security.secrets import api_keys
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic echoes the offending input: a passphrase or a credential file must never come back
    # in a response (or reach a log through one), so keep only where and what.
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]


def create_app(settings: Settings | None = None) -> FastAPI:
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
    )

    @app.exception_handler(DomainError)
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Unavailable) else None
        return JSONResponse({"detail": exc.reason}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_errors(exc)}, status_code=422)

    @app.middleware("http")
    async def metrics(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, path).observe(time.perf_counter() - start)
        REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.get("/health", tags=["ops"], summary="Liveness and database reachability (no auth)")
    def health() -> JSONResponse:
        try:
            with engine.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health check: database unreachable (%s)", type(exc).__name__)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": engine.dialect.name})

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(routes_elections.router)
    app.include_router(routes_jobs.router)
    return app


def __getattr__(name: str) -> Any:
    # ``uvicorn service.api.app:app`` builds the app from the environment on first access only, so
    # importing this module (tests, the CLI) does not connect anywhere.
    if name == "app":
        return create_app()
    raise AttributeError(name)
