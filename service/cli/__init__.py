"""The ``amarvote`` command line: the demo, the servers, the database, jobs and election records."""

from __future__ import annotations

import typer

from service.cli import demo, ops, record

app = typer.Typer(
    help="ElectionGuard tally, decryption and combine as jobs over RabbitMQ and Ray.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print key material
)
app.command(help=demo.__doc__)(demo.demo)
app.command(help=ops.serve.__doc__)(ops.serve)
app.command(help=ops.bridge.__doc__)(ops.bridge)
app.command(help=ops.relay.__doc__)(ops.relay)
app.command(help=ops.reconcile.__doc__)(ops.reconcile)
app.command(help=ops.token.__doc__)(ops.token)
app.add_typer(ops.db_app, name="db")
app.add_typer(ops.jobs_app, name="jobs")
app.add_typer(record.app, name="record")
