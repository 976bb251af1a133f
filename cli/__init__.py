"""The ``amarvote`` command line: the demo, the servers, the database, jobs, election records, and a
guardian's own commands (``amarvote guardian``)."""

from __future__ import annotations

import sys

import typer

from cli import demo, guardian, ops, record

app = typer.Typer(
    help="ElectionGuard tally, decryption and combine as jobs over RabbitMQ and Ray.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print key material
)
_debug = {"on": False}


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error (never its locals)."),
) -> None:
    _debug["on"] = debug
    from cli import logs
    from service.settings import Settings

    logs.set_debug(debug)
    try:
        level = Settings().log_level
    except Exception:  # a bad setting is reported by the command that reads it
        level = "INFO"
    logs.configure(logs.level_of(level, debug=debug), rich=True)


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
app.add_typer(guardian.app, name="guardian")


def main() -> None:
    """The ``amarvote`` entry point: an error is one message and exit status 1 (a traceback with --debug)."""
    try:
        app(prog_name="amarvote")
    except Exception as exc:
        if _debug["on"] or "--debug" in sys.argv[1:2]:
            raise
        from cli.errors import explain
        from cli.ui import console

        console.print(f"[red]error:[/red] {explain(exc)}", highlight=False, soft_wrap=True)
        console.print("[dim](run `amarvote --debug ...` for the traceback)[/dim]")
        sys.exit(1)
