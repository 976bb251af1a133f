"""Running the pieces: the API, the bridge (with relay and housekeeping), the database, and jobs."""

from __future__ import annotations

import json
import logging
import uuid

import typer
from rich.console import Console
from rich.table import Table

from service.db.session import SessionFactory, session_factory, transaction
from service.settings import Settings

console = Console()
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect jobs, re-drive failed chunks, verify an election.", no_args_is_help=True)
escrow_app = typer.Typer(help="Guardians' key escrows of running decryption jobs.", no_args_is_help=True)


def _db(settings: Settings | None = None) -> SessionFactory:
    return session_factory((settings or Settings()).sqlalchemy_url)


def _logging() -> None:
    """The servers' logging (cli/logs.py): plain timestamped lines, our events at AMARVOTE_LOG_LEVEL."""
    from cli import logs

    logs.configure(logs.level_of(Settings().log_level, debug=logs.debug_requested()))


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Serve the HTTP API, the public bulletin board (/elections/ID) and the operator console (/console)."""
    import uvicorn

    from cli import logs

    _logging()
    level = logs.level_of(Settings().log_level, debug=logs.debug_requested())
    # uvicorn's own access log only with DEBUG: requests are counted in /metrics.
    uvicorn.run(
        "cli.api:app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="debug" if level <= logging.DEBUG else "warning",
        log_config=None,
        access_log=level <= logging.DEBUG,
    )


def bridge(
    relay: bool = typer.Option(True, help="Also relay the outbox to RabbitMQ in this process."),
    reconcile: bool = typer.Option(
        True, help="Also run the reconciler, the callback sender and the escrow sweeper in this process."
    ),
) -> None:
    """Consume chunk messages and run them as Ray tasks; without an AMQP URL, drain the outbox in-process."""
    from cli.worker import make_worker, run_until_signalled

    _logging()
    settings = Settings()
    if settings.embedded:
        console.print("no AMQP URL set: single-machine mode, chunk tasks taken from the database's outbox")
    run_until_signalled(make_worker(settings, with_relay=relay, with_housekeeping=reconcile))


def relay() -> None:
    """Publish the outbox to RabbitMQ with confirms (several relays may run)."""
    from cli.worker import make_relay, run_until_signalled

    _logging()
    settings = Settings()
    run_until_signalled(make_relay(settings, _db(settings)))


def reconcile(interval: float = 30.0) -> None:
    """Republish chunk tasks that PostgreSQL holds pending or leased-and-expired with nobody on them; send
    due completion callbacks; erase expired key escrows."""
    from cli.worker import Together, make_housekeeping, run_until_signalled

    _logging()
    settings = Settings()
    run_until_signalled(Together(make_housekeeping(settings, _db(settings), interval=interval)))


@db_app.command()
def upgrade(revision: str = "head") -> None:
    """Apply the migrations to the configured database (creates it on SQLite)."""
    from service.db.migrate import upgrade as do_upgrade

    do_upgrade(Settings().sqlalchemy_url, revision)
    console.print(f"database at revision {revision}")


def _job_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        console.print(f"[red]not a job id: {value!r}[/red]")
        raise typer.Exit(2) from None


@jobs_app.command("list")
def list_jobs(
    election_id: int | None = typer.Option(None, "--election-id"),
    stuck: bool = typer.Option(
        False, "--stuck", help="Only live jobs with no chunk ending for AMARVOTE_STUCK_AFTER_SECONDS."
    ),
) -> None:
    """Jobs, newest first, with their progress."""
    from service.jobs.clock import db_now
    from service.jobs.status import job_document
    from service.jobs.status import list_jobs as query

    settings = Settings()
    after = settings.stuck_after_seconds
    with transaction(_db(settings)) as s:
        now = db_now(s)
        jobs = query(s, election_id, None, stuck_after=after if stuck else None)
        docs = [job_document(s, j, detail=False, stuck_after=after, now=now) for j in jobs]
    columns = ("job id", "election", "operation", "status", "prio", "done/total", "failed", "last progress")
    table = Table(*columns)
    for d in docs:
        table.add_row(
            str(d["jobId"]),
            str(d["electionId"]),
            d["operationType"],
            d["status"] + (" STUCK" if d["stuck"] else ""),
            str(d["priority"]),
            f"{d['processedChunks']}/{d['totalChunks']}",
            str(d["failedChunks"]),
            str(d["lastProgressAt"]),
        )
    console.print(table)
    if stuck and not docs:
        console.print(f"no stuck job (none live without a chunk ending for {after:g} s)")


@jobs_app.command()
def show(job_id: str) -> None:
    """One job's status document, with the error of each failed chunk."""
    from service.errors import DomainError
    from service.jobs.status import get_job, job_document

    settings = Settings()
    try:
        with transaction(_db(settings)) as s:
            doc = job_document(s, get_job(s, _job_id(job_id)), stuck_after=settings.stuck_after_seconds)
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print_json(json.dumps(doc, default=str))


@jobs_app.command()
def redrive(job_id: str) -> None:
    """Put a job's FAILED chunks back in the queue (attempts reset) once the cause is removed."""
    from service.errors import DomainError
    from service.jobs.redrive import redrive_job

    jid = _job_id(job_id)
    try:
        with transaction(_db()) as s:
            n = redrive_job(s, jid)
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{n} failed chunk(s) of job {jid} re-queued")


@jobs_app.command()
def verify(election_id: int) -> None:
    """Verify a decrypted election from the database on the cluster (what POST /api/verify/create does):
    the bridge runs the job; `amarvote jobs show JOB_ID` gives its verdict."""
    from service.errors import DomainError
    from service.jobs.planning import create_verify_job

    try:
        with transaction(_db()) as s:
            job = create_verify_job(s, election_id, "cli")
            jid, chunks = job.job_id, job.total_chunks
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print(f"verify job {jid} of election {election_id} created ({chunks} chunk(s))")


@escrow_app.command("erase")
def erase_escrows(
    election_id: int = typer.Argument(..., help="The election whose key escrows to erase."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Erase every key escrow of an election now (its running decryption jobs then fail; guardians start
    again with their credential files)."""
    from service.elections.elections import get_election
    from service.elections.escrow import erase_election_escrows
    from service.errors import DomainError

    if not yes:
        typer.confirm(f"erase every key escrow of election {election_id}?", abort=True)
    try:
        with transaction(_db()) as s:
            get_election(s, election_id)
            n = erase_election_escrows(s, election_id)
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{n} key escrow(s) of election {election_id} erased")


def token(
    subject: str = typer.Argument(..., help="Who the token is for (recorded as created_by on jobs)."),
    role: str = typer.Option("admin", help="admin or guardian"),
    election_id: int | None = typer.Option(None, "--election-id", help="A guardian token's election."),
    guardian_id: str | None = typer.Option(None, "--guardian-id", help="A guardian token's guardian."),
    hours: float = typer.Option(12.0, help="Lifetime."),
) -> None:
    """Print a bearer token for the API, signed with AMARVOTE_JWT_SECRET (the API's key; on the embedded
    default, the one generated into the data directory)."""
    from service.security.auth import issue_token

    try:
        print(
            issue_token(
                Settings(),
                subject,
                role,
                election_id=election_id,
                guardian_id=guardian_id,
                ttl_seconds=int(hours * 3600),
            )
        )
    except ValueError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
