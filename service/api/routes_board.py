"""The public bulletin board (no token): thin routes over ``service.elections.board``.

``GET /elections/{id}`` the board; ``GET /elections/{id}/track?code=...`` the board with a tracking code
looked up (rate-limited per client address: 429 with Retry-After); ``GET /elections/{id}/record.zip`` the
published election record, the same zip as the admin's ``GET /api/elections/{id}/record`` (it holds
public data only: ``results.header_files`` and the submitted and spoiled ballots), rate-limited too since
writing it reads every ballot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from service.api.deps import Ctx
from service.api.types import Id
from service.api.web import page_headers, render
from service.elections import board, results
from service.errors import TooManyRequests

router = APIRouter(tags=["board"], include_in_schema=False)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _board_page(
    request: Request,
    ctx: Ctx,
    election_id: int,
    extra: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    with ctx.tx() as s:
        doc = board.board(s, election_id)
    return render(
        request, "board.html", {"b": doc, **(extra or {})}, status_code=status_code, headers=headers
    )


@router.get("/elections/{election_id}", response_class=HTMLResponse)
def board_page(request: Request, election_id: Id, ctx: Ctx) -> HTMLResponse:
    return _board_page(request, ctx, election_id)


@router.get("/elections/{election_id}/track", response_class=HTMLResponse)
def track(
    request: Request,
    election_id: Id,
    ctx: Ctx,
    code: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    try:
        ctx.board_limiter.check(_client(request))
    except TooManyRequests as exc:
        retry = str(exc.retry_after or 60)
        extra = {"code": code, "limited": exc.reason}
        return _board_page(request, ctx, election_id, extra, status_code=429, headers={"Retry-After": retry})
    with ctx.tx() as s:
        found = board.lookup(s, election_id, code)
    return _board_page(request, ctx, election_id, {"code": code, "lookup": found})


@router.get("/elections/{election_id}/record.zip", response_class=FileResponse)
def public_record(request: Request, election_id: Id, ctx: Ctx, background: BackgroundTasks) -> FileResponse:
    ctx.record_limiter.check(_client(request))
    with ctx.tx() as s:
        path = results.record_zip_file(s, election_id)
    background.add_task(Path(path).unlink, missing_ok=True)
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"election_{election_id}_record.zip",
        headers=page_headers(private=False),
    )
