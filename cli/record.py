"""``amarvote record``: verify an election record, or run one made elsewhere through the pipeline."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

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
    path: Path = typer.Argument(
        ..., exists=True, help="election_record/ (or the folder holding it), or a zip of it"
    ),
    local: bool = typer.Option(
        False, "--local", help="Check in this process on all its cores, not on Ray (small records)."
    ),
    chunk_size: int | None = typer.Option(
        None,
        "--chunk-size",
        min=1,
        help=(
            "Ballots per Ray task (default 200), or per unit with --local"
            " (default: 10,000 selections' worth, 200 to 1,000 ballots)."
        ),
    ),
) -> None:
    """Verify every ballot, the encrypted tally, every share and the plaintext tally of a record, reading
    it a chunk of ballots at a time; the chunks are checked on the configured Ray unless --local."""
    from compute.record import header_files, open_record

    record_path = _record_dir(path) if path.is_dir() else path
    try:
        with open_record(record_path) as source:
            header_files(source)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        console.print(f"[red]cannot read the record in {record_path}: {e}[/red]")
        raise typer.Exit(2) from None
    outcome = check_record(record_path, None if local else _settings(), chunk_size, show_progress=True)
    if outcome.problems:
        for p in outcome.problems:
            console.print(f"[red]FAIL[/red] {p}")
        console.print(f"[red]{len(outcome.problems)} problem(s) in {record_path}[/red]")
        if bad := outcome.failed_ballots:
            tail = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
            console.print(f"{len(bad)} ballot(s) fail: {', '.join(bad[:10])}{tail}")
        if outcome.chunks_with_problems:
            shown = ", ".join(outcome.chunks_with_problems[:5])
            more = len(outcome.chunks_with_problems) - 5
            console.print(f"problems found in {shown}" + (f" and {more} more chunk(s)" if more > 0 else ""))
    if outcome.failed_chunks:
        from bridge.verify import VerifyFailed

        raise VerifyFailed(record_path, outcome.failed_chunks, outcome.chunks)
    if outcome.problems:
        raise typer.Exit(1)
    console.print(
        f"[green]OK[/green] {record_path}: {outcome.ballots} ballots ({outcome.spoiled} spoiled), "
        f"{outcome.guardians} guardians, tally verified"
        + ("" if local else f"; {outcome.chunks} chunk(s) on Ray")
    )


def _settings() -> Any:
    from service.settings import Settings

    return Settings()


def check_record(
    record_path: Path,
    on_ray: Any = None,
    chunk_size: int | None = None,
    show_progress: bool = False,
) -> Any:
    """Verify the record at ``record_path`` (directory or zip): in this process on every core, or over
    Ray when ``on_ray`` is the settings to connect with. The outcome has ``problems`` (empty when the
    record verifies) and ``failed_chunks`` (chunks whose task failed, so that were not checked)."""
    from contextlib import nullcontext

    from cli.ui import progress_bars

    bars = progress_bars() if show_progress else nullcontext()
    with bars as bar:
        task = None if bar is None else bar.add_task("verify ballots", total=None)

        def report(done: int, total: int) -> None:
            if bar is not None and task is not None:
                bar.update(task, completed=done, total=total or None)

        if on_ray is not None:
            from bridge.verify import CHUNK_BALLOTS, verify_on_ray

            return verify_on_ray(
                on_ray,
                record_path,
                chunk_size or CHUNK_BALLOTS,
                report,
                in_flight_bytes=on_ray.verify_in_flight_mb * 2**20,
            )
        from compute.parallel import default_workers
        from compute.record import open_record
        from compute.verify import verify_source

        with open_record(record_path) as source:
            return verify_source(source, chunk_size, default_workers(), report)


IMPORT_BATCH = 200


@app.command()
def run(
    directory: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="election_record/ made elsewhere"
    ),
    private_guardians: Path = typer.Option(
        ...,
        "--private-guardians",
        exists=True,
        file_okay=False,
        help="election_private_data/ (or its private_guardians/)",
    ),
    missing: list[str] = typer.Option([], "--missing", help="A guardian to treat as absent (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Where to write the resulting election record."),
    chunk_size: int = typer.Option(2500, "--chunk-size", min=1),
    resume: int | None = typer.Option(
        None,
        "--resume",
        metavar="ELECTION_ID",
        help="Continue an interrupted run from its database (set AMARVOTE_DATA_DIR or AMARVOTE_DATABASE_URL"
        " to the run's); the same directory, --private-guardians and --missing.",
    ),
) -> None:
    """Import a record's election and ballots, then tally, decrypt (compensating the missing guardians) and
    combine them as jobs through the configured pipeline, and write the resulting record to --out."""
    from cli.ui import run_settings
    from service.settings import Settings

    if resume is not None:
        settings = Settings()
        if settings.database_url is None and "data_dir" not in settings.model_fields_set:
            raise typer.BadParameter(
                "set AMARVOTE_DATA_DIR to the interrupted run's data directory", param_hint="--resume"
            )
    else:
        settings = run_settings("record")
    record_dir = _record_dir(directory)
    summary = run_record(settings, record_dir, private_guardians, missing, out, chunk_size, resume)
    for contest, selections in summary["counts"].items():
        for selection, votes in selections.items():
            console.print(f"{contest:<32} {selection:<40} {votes:>8}")
    console.print(f"spoiled ballots decrypted: {len(summary['spoiled'])}")
    console.print(f"record: {summary['record_dir']}")


def _check_ids(record_dir: Path, guardian_ids: set[Any]) -> None:
    """Refuse a record whose guardian ids or ballot file names fail ``compute.ids`` (names only: each
    ballot's own id is held to its file's name as it is imported)."""
    from compute.ids import GUARDIAN_ID_MAX, UnsafeId, check_id
    from compute.record import layout_problems, open_record

    try:
        for gid in sorted(guardian_ids, key=str):
            check_id(gid, "guardian_id", GUARDIAN_ID_MAX)
    except UnsafeId as exc:
        raise typer.BadParameter(str(exc)) from None
    with open_record(record_dir) as source:
        if problems := layout_problems(source):
            raise typer.BadParameter(f"{record_dir}: " + "; ".join(problems[:10]))


def _private_dir(path: Path) -> Path:
    return path.parent if path.name == "private_guardians" else path


def run_record(
    settings: Any,
    record_dir: Path,
    private_guardians: Path,
    missing: list[str],
    out: Path,
    chunk_size: int,
    resume: int | None = None,
) -> dict[str, Any]:
    """The work of ``record run``, callable from tests: counts, spoiled ballot ids, the record dir."""
    import json
    import secrets

    from sqlalchemy import select

    from cli.pipeline import Pipeline, Timings
    from cli.ui import mode, progress_bars, reporter
    from compute.ballot import BallotBoxState
    from compute.record import read_private_guardians
    from service.db.migrate import upgrade
    from service.db.models import Ballot
    from service.db.session import transaction
    from service.elections import ballots as ballot_service
    from service.elections import elections as election_service
    from service.elections.imports import import_election
    from service.elections.results import results

    def read(name: str) -> Any:
        return json.loads((record_dir / name).read_text())

    guardian_records = [
        json.loads(f.read_text()) for f in sorted((record_dir / "guardians").glob("guardian_*.json"))
    ]
    guardian_ids = {g.get("guardian_id") for g in guardian_records}
    privates = {p.guardian_id: p for p in read_private_guardians(_private_dir(private_guardians))}
    # Ids become file names of the record this run writes: the one rule, before anything is written.
    _check_ids(record_dir, guardian_ids | set(privates) | set(missing))
    # Refused before anything is written: a name that is no guardian, or a present guardian without a key.
    if unknown := set(missing) - guardian_ids:
        raise typer.BadParameter(f"not guardians of this election: {', '.join(sorted(unknown))}")
    if keyless := guardian_ids - set(missing) - set(privates):
        raise typer.BadParameter(
            f"no private record for present guardian(s) {', '.join(sorted(keyless))}: name them --missing"
        )
    console.print(f"[bold]amarvote record run[/bold] {record_dir}; {mode(settings)}")
    pipe = Pipeline(settings, created_by="record-run")
    pipe.connect()
    upgrade(settings.sqlalchemy_url)
    db = pipe.factory
    timings = Timings()
    with transaction(db) as s:
        if resume is None:
            e = import_election(
                s,
                name=f"imported from {record_dir}",
                manifest=read("manifest.json"),
                context=read("context.json"),
                guardian_records=guardian_records,
                created_by="record-run",
            )
        else:
            e = election_service.get_election(s, resume)
        eid, state = e.id, e.state
        # Each guardian's key goes through the same sealed-credential path a guardian uses over HTTP.
        credentials = {}
        for gid in sorted(guardian_ids - set(missing)):
            private = privates[gid]
            passphrase = secrets.token_urlsafe(24)
            credentials[gid] = (
                election_service.seal_credential(e, gid, private.to_json(), passphrase),
                passphrase,
            )
    with pipe.running(), progress_bars() as bar:
        report = pipe.progress = reporter(bar)
        with timings.phase("import ballots"):
            with transaction(db) as s:
                stored = set(s.scalars(select(Ballot.object_id).where(Ballot.election_id == eid)))
            files = (
                []
                if state != "open"
                else sorted(
                    f
                    for f in (record_dir / "submitted_ballots").glob("submitted_ballot_*.json")
                    if f.stem.removeprefix("submitted_ballot_") not in stored
                )
            )
            for i in range(0, len(files), IMPORT_BATCH):
                items = []
                for f in files[i : i + IMPORT_BATCH]:
                    b = json.loads(f.read_text())
                    if not isinstance(b, dict) or b.get("object_id") != f.stem.removeprefix(
                        "submitted_ballot_"
                    ):
                        held = str(b.get("object_id") if isinstance(b, dict) else b)[:80]
                        raise typer.BadParameter(
                            f"{f}: holds ballot {held!r}, not the one its name gives"
                            " (a ballot's id must be a safe id matching its file)"
                        )
                    spoiled = int(b.get("state", BallotBoxState.CAST)) == BallotBoxState.SPOILED
                    items.append((b, "spoil" if spoiled else "cast"))
                with transaction(db) as s:
                    snap = ballot_service.snapshot_for_ballots(s, eid)
                    ballot_service.store(s, eid, ballot_service.prepare_bulk(snap, items))
                report("import ballots", min(i + IMPORT_BATCH, len(files)), len(files))
            if state == "open":
                with transaction(db) as s:
                    election_service.close_election(s, eid)
        if resume is None:
            pipe.run_jobs(eid, chunk_size, credentials, missing, timings)
        else:
            pipe.resume_jobs(eid, chunk_size, credentials, missing, timings)
    with transaction(db) as s:
        result = results(s, eid)
    written = pipe.export_record(eid, out)
    counts = {
        c["contest_id"]: {s["selection_id"]: s["votes"] for s in c["selections"]} for c in result["contests"]
    }
    return {
        "counts": counts,
        "spoiled": sorted(result["spoiled_ballots"]),
        "record_dir": written,
        "timings": timings.phases,
    }
