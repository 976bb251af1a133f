"""How the CLI reports a failure: one message that says what failed and what to do, no traceback.

The traceback is shown only under ``amarvote --debug ...``. Messages name settings and objects, never a
secret (a database URL is shown without its password).
"""

from __future__ import annotations

from typing import Any

SEAL_HINT = (
    "the Ray workers cannot open the key escrow: set AMARVOTE_SERVER_SECRET to the same value on every"
    " Ray node (in the environment of its `ray start`) and API replica"
)


def _redacted_url(url: Any) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(str(url)).render_as_string(hide_password=True)
    except Exception:
        return "the configured URL"


def explain(exc: BaseException) -> str:
    """The one message for ``exc``: what failed, and the command or setting that fixes it."""
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError

    from bridge.probe import ClusterMismatch
    from bridge.verify import VerifyFailed
    from cli.guardian.api import GuardianError
    from cli.pipeline import JobFailed
    from service.errors import DomainError

    if isinstance(exc, GuardianError):
        return str(exc)
    if isinstance(exc, JobFailed):
        lines = [str(exc)]
        if any("SealError" in j.first_error for j in exc.jobs):
            lines.append(SEAL_HINT)
        for j in exc.jobs:
            lines.append(
                f"details: `amarvote jobs show {j.job_id}`; once the cause is fixed:"
                f" `amarvote jobs redrive {j.job_id}`"
            )
        return "\n".join(lines)
    if isinstance(exc, VerifyFailed):
        return (
            f"{exc}\nthe record was not fully checked: once the cause is fixed, run"
            f" `amarvote record verify {exc.record}` again (`--local` checks it in this process)"
        )
    if isinstance(exc, ClusterMismatch):
        return str(exc)
    if isinstance(exc, DomainError):
        return exc.reason
    if isinstance(exc, OperationalError):
        from service.settings import Settings

        first = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        where = _redacted_url(Settings().sqlalchemy_url)
        return f"cannot use the database at {where} (AMARVOTE_DATABASE_URL): {first}"
    if isinstance(exc, ValidationError):
        fields = "; ".join(
            f"AMARVOTE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        return f"bad setting: {fields}"
    if type(exc).__module__.startswith("pika") and "Connection" in type(exc).__name__:
        return f"cannot connect to RabbitMQ (AMARVOTE_AMQP_URL): {type(exc).__name__}"
    if isinstance(exc, ConnectionError) and "ray" in type(exc).__module__.lower() + str(exc).lower():
        return f"cannot connect to the Ray cluster (AMARVOTE_RAY_ADDRESS): {exc}"
    if isinstance(exc, TimeoutError):
        return f"timed out: {exc}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
