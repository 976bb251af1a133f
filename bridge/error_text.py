"""An error as one line for a job's status or a callback's record: the exception's type and the first line
of its message, no traceback, bounded. Free of Ray, so the callback sender and ``record verify`` use it
without loading the executor's modules."""

from __future__ import annotations

from service.jobs.transitions import MAX_ERROR_CHARS


def cause(exc: BaseException) -> BaseException:
    """The body's own exception inside Ray's RayTaskError (its ``cause``), or ``exc`` itself."""
    inner = getattr(exc, "cause", None)
    return inner if isinstance(inner, BaseException) else exc


def describe_error(exc: BaseException) -> str:
    """The exception type and message, no traceback. Ray wraps a body's exception in RayTaskError, whose
    text includes a traceback: its cause is described instead. Our bodies never put key material in an
    exception message."""
    exc = cause(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]
