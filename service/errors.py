"""Domain errors: each carries the HTTP status it maps to and a reason safe to show a client.

A reason names objects (election, guardian, ballot ids) and states; it never quotes a secret.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(DomainError):
    status_code = 400


class Unauthorized(DomainError):
    status_code = 401


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    """The request is well formed but the election or job is in the wrong state for it."""

    status_code = 409


class Gone(DomainError):
    """What was asked for existed once and was handed out or erased for good (a claimed credential file)."""

    status_code = 410


class Invalid(DomainError):
    """The content is malformed or fails validation (a ballot's proofs, a credential file)."""

    status_code = 422


class TooManyRequests(DomainError):
    """Over a rate limit; ``retry_after`` (seconds, sent as ``Retry-After``) when the limiter knows it."""

    status_code = 429

    def __init__(self, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.reason, self.retry_after), self.__dict__


class Unavailable(DomainError):
    """The service is too busy for the request right now (say, every KDF slot is taken); nothing was
    changed, and the client may retry after ``retry_after`` seconds (sent as ``Retry-After``)."""

    status_code = 503

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickling (a Ray task's exception reaching the driver) calls cls(*self.args), and args lacks
        # retry_after: without this the exception could not be rebuilt at all.
        return type(self), (self.reason, self.retry_after), self.__dict__
