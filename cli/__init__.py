"""The ``amarvote`` command line: the demo, the servers, the database, jobs, election records, and a
guardian's own commands (``amarvote guardian``)."""

from __future__ import annotations

import os
import sys

import typer

from cli import guardian

app = typer.Typer(
    help="ElectionGuard tally, decryption and combine as jobs over RabbitMQ and Ray.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print key material
)
_debug = {"on": False}


@app.callback()
def _options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error (never its locals)."),
) -> None:
    _debug["on"] = debug
    from cli import logs

    logs.set_debug(debug)
    if ctx.invoked_subcommand == "guardian":
        # A guardian's machine has no service settings to read: only the log level, from its environment.
        level = os.environ.get("AMARVOTE_LOG_LEVEL", "INFO")
    else:
        from service.settings import Settings

        try:
            level = Settings().log_level
        except Exception:  # a bad setting is reported by the command that reads it
            level = "INFO"
    logs.configure(logs.level_of(level, debug=debug), rich=True)


app.add_typer(guardian.app, name="guardian")


def _add_service_commands() -> None:
    """The commands that run or reach the service (its database, broker, Ray). Not loaded for ``amarvote
    guardian``: a guardian's command talks to the API only and imports none of the service's code."""
    from cli import demo, ops, record

    app.command(help=demo.__doc__)(demo.demo)
    app.command(help=ops.serve.__doc__)(ops.serve)
    app.command(help=ops.bridge.__doc__)(ops.bridge)
    app.command(help=ops.relay.__doc__)(ops.relay)
    app.command(help=ops.reconcile.__doc__)(ops.reconcile)
    app.command(help=ops.token.__doc__)(ops.token)
    app.add_typer(ops.db_app, name="db")
    app.add_typer(ops.jobs_app, name="jobs")
    app.add_typer(ops.escrow_app, name="escrow")
    app.add_typer(record.app, name="record")


def _guardian_only(args: list[str]) -> bool:
    """Whether the command line runs ``amarvote [--debug] guardian ...``."""
    words = [a for a in args if a != "--debug"]
    return words[:1] == ["guardian"]


def main() -> None:
    """The ``amarvote`` entry point: an error is one message and exit status 1 (a traceback with --debug)."""
    if not _guardian_only(sys.argv[1:]):
        _add_service_commands()
    try:
        app(prog_name="amarvote")
    except Exception as exc:
        if _debug["on"] or "--debug" in sys.argv[1:2]:
            raise
        from cli.console import console
        from cli.guardian.api import GuardianError

        # A guardian's error is its own message; explain() knows the service's errors (and imports them).
        if isinstance(exc, GuardianError):
            message = str(exc)
        else:
            from cli.errors import explain

            message = explain(exc)
        console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        console.print("[dim](run `amarvote --debug ...` for the traceback)[/dim]")
        sys.exit(1)
