"""A pure ASGI middleware that refuses a request body above a size, before any route, dependency or
authentication reads it: an unauthenticated 80 MB body must cost a 413, not a parse.

``Content-Length`` above the limit is refused at once, without reading a byte; a body without it
(chunked) is counted as it streams, and refused the moment it passes the limit.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from the body read: an HTTPException, so FastAPI's body parsing passes it on as it is
    (any other error there becomes a 400) and the app's handler answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _reason(max_bytes))


def _reason(max_bytes: int) -> str:
    return (
        f"the request body is larger than {max_bytes} bytes"
        " (AMARVOTE_MAX_BODY_BYTES; AMARVOTE_MAX_BULK_BODY_BYTES for a bulk upload)"
    )


class BodyLimit:
    """``max_bytes`` for every request; ``large`` (path suffix, limit) pairs allow more on the routes
    whose bodies are big by design (a bulk upload of ballots)."""

    def __init__(self, app: ASGIApp, max_bytes: int, large: tuple[tuple[str, int], ...] = ()) -> None:
        self.app = app
        self.default = max_bytes
        self.large = large

    def _limit(self, scope: Scope) -> int:
        path = scope.get("path", "")
        for suffix, limit in self.large:
            if path.endswith(suffix):
                return limit
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
                if declared > limit:
                    await self._refuse(send, 413, _reason(limit))
                    return

        seen = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
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
                await self._refuse(send, 413, _reason(limit))

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
