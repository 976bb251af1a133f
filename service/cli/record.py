"""``amarvote record``: verify an election record, or run one made elsewhere through the pipeline."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Election records in the reference package's export layout.", no_args_is_help=True)
console = Console()


def _record_dir(directory: Path) -> Path:
    """Accept either the election_record/ folder or the folder that holds it."""
    nested = directory / "election_record"
    return nested if nested.is_dir() else directory


@app.command()
def verify(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="election_record/ dir"),
) -> None:
    """Verify every ballot, the encrypted tally, every share and the plaintext tally of a record."""
    from compute.record import read_record
    from compute.verify import verify_record

    record_dir = _record_dir(directory)
    try:
        record = read_record(record_dir)
    except (OSError, KeyError, ValueError) as e:
        console.print(f"[red]cannot read the record in {record_dir}: {e}[/red]")
        raise typer.Exit(2) from None
    with console.status(f"verifying {len(record.submitted_ballots)} ballots and the tally"):
        problems = verify_record(record)
    if problems:
        for p in problems:
            console.print(f"[red]FAIL[/red] {p}")
        console.print(f"[red]{len(problems)} problem(s) in {record_dir}[/red]")
        raise typer.Exit(1)
    console.print(
        f"[green]OK[/green] {record_dir}: {len(record.submitted_ballots)} ballots, "
        f"{len(record.guardians)} guardians, {len(record.spoiled_ballots)} spoiled ballots, tally verified"
    )
