"""A pure ASGI middleware that refuses a request body above a size, before any route, dependency or
authentication reads it: an unauthenticated 80 MB body must cost a 413, not a parse.

``Content-Length`` above the limit is refused at once, without reading a byte; a body without it
(chunked) is counted as it streams, and refused the moment it passes the limit. The larger limit of a
route whose bodies are big by design (a bulk upload) is only for a caller the ``gate`` admits (an
admin's valid token): anyone else is held to the default and refused with the gate's 401 or 403, so an
unauthenticated 200 MB upload is not read either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import DomainError

Gate = Callable[[Scope], DomainError | None]
"""Whether a request may send a large body: ``None``, or the error that refuses it."""


@dataclass(frozen=True, slots=True)
class _Limit:
    max_bytes: int
    status: int  # what a body past it is answered with
    detail: str


class BodyTooLarge(HTTPException):
    """Raised from the body read: an HTTPException, so FastAPI's body parsing passes it on as it is
    (any other error there becomes a 400) and the app's handler answers with its status."""

    def __init__(self, limit: _Limit) -> None:
        super().__init__(limit.status, limit.detail)


def _reason(max_bytes: int) -> str:
    return (
        f"the request body is larger than {max_bytes} bytes"
        " (AMARVOTE_MAX_BODY_BYTES; AMARVOTE_MAX_BULK_BODY_BYTES for a bulk upload)"
    )


class BodyLimit:
    """``max_bytes`` for every request; ``large`` (path suffix, limit) pairs allow more on the routes
    whose bodies are big by design (a bulk upload of ballots), to callers ``gate`` admits."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        large: tuple[tuple[str, int], ...] = (),
        gate: Gate | None = None,
    ) -> None:
        self.app = app
        self.default = _Limit(max_bytes, 413, _reason(max_bytes))
        self.large = large
        self.gate = gate

    def _limit(self, scope: Scope) -> _Limit:
        path = scope.get("path", "")
        for suffix, max_bytes in self.large:
            if path.endswith(suffix):
                refused = self.gate(scope) if self.gate else None
                if refused is None:
                    return _Limit(max_bytes, 413, _reason(max_bytes))
                detail = (
                    f"{refused.reason} (a body above {self.default.max_bytes} bytes,"
                    " AMARVOTE_MAX_BODY_BYTES, is not read without it)"
                )
                return _Limit(self.default.max_bytes, refused.status_code, detail)
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(send, 400, "the Content-Length header is not a number")
                    return
                if declared > limit.max_bytes:
                    await self._refuse(send, limit.status, limit.detail)
                    return

        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit.max_bytes:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            # Raised inside the body read, so no route has run past it; a response already begun (a
            # route that answered before reading everything) cannot be replaced.
            if not started:
                await self._refuse(send, limit.status, limit.detail)

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
