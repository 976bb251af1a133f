"""``amarvote guardian``: the command a guardian of a guardian-held election runs on its own machine.

It talks to the API only (httpx, the guardian's own token); it imports neither the service nor the bridge
(nor SQLAlchemy, pika or Ray: an import-linter contract), and its secrets stay in its own folder, sealed
under its passphrase: ``init`` makes the key pair and polynomial, ``ceremony`` does every step of the
key ceremony that is due, ``decrypt`` checks what it is asked to decrypt and uploads its shares,
``status`` shows where the ceremony and its decryption jobs stand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.guardian.api import Api, GuardianError
from cli.guardian.ceremony import Ceremony, check_slot, slot_taken
from cli.guardian.ceremony import run as run_ceremony
from cli.guardian.decrypt import Decryption, Timings
from cli.guardian.folder import Folder, default_dir, key_fingerprint, read_passphrase
from compute.ceremony import make_guardian_keys
from compute.guardian import PrivateGuardianRecord

console = Console(highlight=False, soft_wrap=True)
app = typer.Typer(
    help="A guardian's own commands for a guardian-held election: its keys never leave this machine.",
    no_args_is_help=True,
)

DIR_HELP = "The guardian's folder (default: ./amarvote-guardian-<election>-<guardian>)."
PASS_FILE = typer.Option(
    None,
    "--passphrase-file",
    help="Read the passphrase from this file's first line (else AMARVOTE_GUARDIAN_PASSPHRASE, or a prompt).",
    exists=False,
)


def _say(text: str) -> None:
    console.print(text)


def _folder(directory: Path | None) -> Folder:
    if directory is not None:
        return Folder.open(directory)
    found = sorted(Path(".").glob("amarvote-guardian-*"))
    if len(found) == 1:
        return Folder.open(found[0])
    raise GuardianError(
        "give the guardian's folder with --dir" + (f" (found {len(found)} here)" if found else "")
    )


def _api(folder: Folder) -> Api:
    return Api(folder.config["api_url"], folder.config["token"])


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def init_folder(
    api: Api,
    path: Path,
    election_id: int,
    guardian_id: str,
    token: str,
    passphrase: Callable[[], str],
) -> tuple[Folder, PrivateGuardianRecord]:
    """``init``'s work: check the slot is this guardian's and free, then make its keys and seal them in a
    new folder at ``path`` under ``passphrase()`` (asked only once the checks pass); the folder and the
    record it sealed."""
    if path.exists() and any(path.iterdir()):
        raise GuardianError(
            f"{path} already exists and is not empty: `amarvote guardian ceremony --dir {path}`"
        )
    base = f"/api/elections/{election_id}"
    st = api.get(f"{base}/ceremony")
    if st.get("due") is None:
        raise GuardianError("this is not a guardian's own token (an admin's cannot act for a guardian)")
    slot = next((g for g in st["guardians"] if g["guardian_id"] == guardian_id), None)
    if slot is None:
        raise GuardianError(f"guardian {guardian_id!r} has no slot in election {election_id}'s key ceremony")
    if any(k.get("owner_id") == guardian_id for k in api.get(f"{base}/ceremony/keys")):
        raise slot_taken(guardian_id, election_id)
    secret = passphrase()
    keys = make_guardian_keys(guardian_id, int(slot["sequence_order"]), int(st["quorum"]))
    folder = Folder.create(
        path,
        {
            "api_url": api.url,
            "election_id": election_id,
            "guardian_id": guardian_id,
            "token": token,
            "sequence_order": int(slot["sequence_order"]),
            "quorum": int(st["quorum"]),
            "number_of_guardians": int(st["number_of_guardians"]),
            "key_fingerprint": key_fingerprint(keys.key_pair.public_key),
        },
    )
    record = PrivateGuardianRecord(guardian_id, keys)
    folder.seal(record, secret)
    return folder, record


@app.command()
def init(
    api_url: str = typer.Option(..., "--api", help="The amarvote API's URL, e.g. https://vote.example/"),
    election_id: int = typer.Option(..., "--election", help="The election's id."),
    guardian_id: str = typer.Option(..., "--guardian", help="This guardian's id."),
    token: str = typer.Option(
        ..., "--token", envvar="AMARVOTE_GUARDIAN_TOKEN", help="This guardian's own token (from the admin)."
    ),
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    passphrase_file: Path | None = PASS_FILE,
) -> None:
    """Make this guardian's key pair and polynomial, sealed in its own folder; print its key fingerprint."""
    path = directory or default_dir(election_id, guardian_id)
    folder, _ = init_folder(
        Api(api_url, token),
        path,
        election_id,
        guardian_id,
        token,
        lambda: read_passphrase(passphrase_file, new=True),
    )
    fp = folder.config["key_fingerprint"]
    console.print(f"guardian {guardian_id!r} of election {election_id}: keys made and sealed in {path}")
    console.print(f"key fingerprint: [bold]{fp}[/bold]  (compare it with the administrator out of band)")
    console.print(f"next: amarvote guardian ceremony --dir {path} --wait")


@app.command()
def ceremony(
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    passphrase_file: Path | None = PASS_FILE,
    wait: bool = typer.Option(False, "--wait", help="Keep going until the ceremony is complete (or failed)."),
    interval: float = typer.Option(2.0, help="Seconds between polls with --wait."),
    timeout: float | None = typer.Option(None, help="Give up after this many seconds with --wait."),
) -> None:
    """Do every step of the key ceremony due for this guardian (idempotent, resumable)."""
    folder = _folder(directory)
    api = _api(folder)
    check_slot(
        api.get(f"/api/elections/{folder.election_id}/ceremony/keys"), folder.public_key(), folder.election_id
    )
    passphrase = read_passphrase(passphrase_file, new=False)
    record = folder.open_record(passphrase)
    st = run_ceremony(
        Ceremony(api, folder, record, passphrase, _say), wait=wait, interval=interval, timeout=timeout
    )
    if st["state"] == "complete":
        console.print(
            f"the key ceremony of election {folder.election_id} is complete; guardian"
            f" {folder.guardian_id!r} holds {len(record.guardian_election_partial_key_backups)} backups"
        )


@app.command()
def decrypt(
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP),
    passphrase_file: Path | None = PASS_FILE,
    workers: int = typer.Option(1, "--workers", min=1, help="Local processes computing the shares."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for the jobs that check the shares."),
    timeout: float | None = typer.Option(None, help="Give up waiting for the jobs after this many seconds."),
) -> None:
    """Check what the election asks this guardian to decrypt, then compute, upload and submit its shares."""
    folder = _folder(directory)
    record = folder.open_record(read_passphrase(passphrase_file, new=False))
    api = _api(folder)
    with _progress() as progress:
        d = Decryption(api, folder, record, progress, _say)
        state = folder.state()
        jobs: list[str] = list(state.get("jobs") or [])
        if not jobs:
            jobs = d.prepare(workers)
        if not wait:
            console.print(f"submitted; jobs: {', '.join(jobs)} (`amarvote guardian status` follows them)")
            _timings(d.timings)
            return
        docs = d.wait(jobs, timeout)
    _timings(d.timings)
    failed = [x for x in docs if x["status"] != "COMPLETED"]
    for x in docs:
        what = x["operationType"] + (f" for {x['missingGuardianId']}" if x.get("missingGuardianId") else "")
        console.print(
            f"job {x['jobId']} ({what}): {x['status']}"
            + (f": {x['errorMessage']}" if x.get("errorMessage") else "")
        )
    if failed:
        raise GuardianError(
            f"{len(failed)} of {len(docs)} job(s) did not complete: a unit whose check failed is uploaded"
            " again by running `amarvote guardian decrypt` once the cause is fixed"
        )


def _timings(t: Timings) -> None:
    console.print(
        f"timings: checks {t.checks:.1f} s ({t.cast} cast ballots), shares {t.shares:.1f} s"
        f" ({t.units} units), jobs {t.jobs:.1f} s"
    )


@app.command()
def status(directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP)) -> None:
    """The key ceremony's round and this guardian's steps, and its decryption jobs (no passphrase needed)."""
    folder = _folder(directory)
    api = _api(folder)
    console.print(
        f"guardian {folder.guardian_id!r} of election {folder.election_id}, key fingerprint"
        f" {folder.config.get('key_fingerprint') or key_fingerprint(folder.public_key().key)}"
    )
    st: dict[str, Any] = api.get(f"/api/elections/{folder.election_id}/ceremony")
    console.print(f"ceremony: {st['state']}" + (f" ({st['failure']})" if st.get("failure") else ""))
    table = Table("guardian", "order", "key", "backups", "verified", "confirmed")
    for g in st["guardians"]:
        table.add_row(
            g["guardian_id"],
            str(g["sequence_order"]),
            *(
                "yes" if g[k] else "-"
                for k in ("key_posted_at", "backups_posted_at", "verifications_posted_at", "confirmed_at")
            ),
        )
    console.print(table)
    if st.get("due") and st["due"]["actions"]:
        console.print(f"due: {', '.join(st['due']['actions'])}")
    jobs = [
        j
        for j in api.get("/api/jobs", election_id=folder.election_id)
        if j["operationType"] in ("PARTIAL_DECRYPTION", "COMPENSATED_DECRYPTION")
    ]
    uploaded = len(folder.state().get("uploaded") or {})
    if not jobs:
        console.print(f"decryption: no job yet ({uploaded} unit(s) uploaded)")
    for j in reversed(jobs):
        what = j["operationType"] + (f" for {j['missingGuardianId']}" if j.get("missingGuardianId") else "")
        console.print(
            f"job {j['jobId']} ({what}): {j['status']}, {j['processedChunks']}/{j['totalChunks']} units"
            + (f", {j['failedChunks']} failed" if j["failedChunks"] else "")
            + (f": {j['errorMessage']}" if j.get("errorMessage") else "")
        )
