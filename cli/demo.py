"""Run a whole election: key ceremony, synthetic ballots (some spoiled), tally in chunks, decryption by
the available guardians with the missing ones compensated, combine, export and verify the record.

Guardian-held by default: the API served in this process, the administrator's steps over HTTP with an
admin token, each simulated guardian's ceremony and decryption through ``amarvote guardian``'s own
functions in a folder of its own (``cli/demo_held.py``). ``--custodial``: the service makes the keys and
each available guardian claims its credential file."""

from __future__ import annotations

import json
import random
import secrets
import uuid
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from cli.record import check_record
from cli.ui import console, mode, progress_bars, reporter, run_settings
from service.settings import Settings

ENCRYPT_BATCH = 50


def demo_manifest() -> dict[str, Any]:
    """Two contests (a 2-of-4 race and a yes/no referendum) from electionguard-python's sample data."""
    return json.loads(resources.files("cli").joinpath("data/demo_manifest.json").read_text())


def synthetic_ballots(
    manifest: dict[str, Any], n: int, spoil_every: int, rng: random.Random
) -> tuple[list[tuple[dict[str, Any], str]], Counter[tuple[str, str]]]:
    """``n`` plaintext ballots with random valid choices (undervotes included) and the expected counts
    of the cast ones: the demo's result is checked against these, not against itself."""
    from compute.manifest import InternalManifest, Manifest

    internal = InternalManifest.from_manifest(Manifest.from_json(manifest))
    styles = [s.object_id for s in internal.ballot_styles if internal.get_contests_for(s.object_id)]
    expected: Counter[tuple[str, str]] = Counter()
    ballots = []
    for i in range(n):
        style = rng.choice(styles)
        action = "spoil" if spoil_every and i % spoil_every == spoil_every - 1 else "cast"
        contests = []
        for c in internal.get_contests_for(style):
            ids = [s.object_id for s in c.ballot_selections]
            allowed = len(ids) if c.votes_allowed is None else min(c.votes_allowed, len(ids))
            chosen = set(rng.sample(ids, rng.randint(0, allowed)))
            contests.append(
                {
                    "object_id": c.object_id,
                    "ballot_selections": [{"object_id": s, "vote": int(s in chosen)} for s in ids],
                }
            )
            if action == "cast":
                expected.update((c.object_id, s) for s in chosen)
        ballots.append(({"object_id": f"ballot-{i:07d}", "style_id": style, "contests": contests}, action))
    return ballots, expected


def _encrypt_remote(as_json: bool = False) -> Any:
    """A Ray task encrypting a batch of plaintexts: the rows to store, or (``as_json``) the submitted
    ballots' JSON with their actions, for ``POST .../ballots/bulk``."""
    import ray

    @ray.remote
    def encrypt_batch(
        items: list[tuple[dict[str, Any], str]], manifest: dict[str, Any], context: dict[str, Any], eid: int
    ) -> list[Any]:
        from service.elections import ballots, crypto

        out: list[Any] = []
        for plaintext, action in items:
            # Only the submitted ballot (no nonce) leaves the task: nobody challenges a demo ballot.
            submitted = crypto.encrypt_plaintext(plaintext, manifest, context, eid).submitted(
                crypto.ballot_state(action)
            )
            out.append(
                {"ballot": submitted.to_json(), "action": action} if as_json else ballots.prepared(submitted)
            )
        return out

    return encrypt_batch


def demo(
    ballots: int = typer.Option(200, "--ballots", min=1, help="Synthetic ballots to encrypt and cast."),
    chunk_size: int | None = typer.Option(
        None,
        "--chunk-size",
        min=1,
        help="Ballots per chunk task (default: an eighth of the ballots, at least 25).",
    ),
    guardians: int = typer.Option(5, "--guardians", min=1, help="Number of guardians n."),
    quorum: int = typer.Option(3, "--quorum", min=1, help="Guardians needed to decrypt, k."),
    missing: int = typer.Option(2, "--missing", min=0, help="Guardians absent at decryption (≤ n - k)."),
    spoil_every: int = typer.Option(25, "--spoil-every", min=0, help="Spoil every Nth ballot (0: none)."),
    out: Path | None = typer.Option(None, "--out", help="Where to write the election record."),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed for the synthetic choices (printed if not given)."
    ),
    custodial: bool = typer.Option(
        False,
        "--custodial",
        help="The custodial flow instead: the service makes every key, each available guardian claims its"
        " credential file (default: guardian-held, each guardian's keys made and kept in its own folder).",
    ),
    resume: int | None = typer.Option(
        None,
        "--resume",
        metavar="ELECTION_ID",
        help="Continue an interrupted --custodial demo from its database: set AMARVOTE_DATA_DIR (or"
        " AMARVOTE_DATABASE_URL) to the run's and give its --seed, --ballots, --missing and --spoil-every"
        " (the line it printed). A guardian-held run is started again instead.",
    ),
) -> None:
    if quorum > guardians:
        raise typer.BadParameter(f"quorum {quorum} exceeds the {guardians} guardians", param_hint="--quorum")
    if missing > guardians - quorum:
        raise typer.BadParameter(
            f"{missing} missing guardians leave fewer than the quorum of {quorum}", param_hint="--missing"
        )
    if resume is not None:
        settings = Settings()
        if settings.database_url is None and "data_dir" not in settings.model_fields_set:
            raise typer.BadParameter(
                "set AMARVOTE_DATA_DIR to the interrupted run's data directory (its resume line names it)",
                param_hint="--resume",
            )
        if seed is None:
            raise typer.BadParameter("give the interrupted run's --seed (its resume line names it)")
    else:
        settings = run_settings("demo")
    seed = secrets.randbelow(2**31) if seed is None else seed
    # Eight chunks show the fan-out without drowning a small demo in per-task overhead.
    chunk_size = chunk_size or max(25, -(-ballots // 8))
    if custodial or resume is not None:
        _run(settings, ballots, chunk_size, guardians, quorum, missing, spoil_every, out, seed, resume)
    else:
        _run_held(settings, ballots, chunk_size, guardians, quorum, missing, spoil_every, out, seed)


def _run(
    settings: Any,
    n_ballots: int,
    chunk_size: int,
    n: int,
    k: int,
    n_missing: int,
    spoil_every: int,
    out: Path | None,
    seed: int,
    resume: int | None = None,
) -> None:
    import ray
    from sqlalchemy import select

    from cli.pipeline import Pipeline, Timings
    from service.db.migrate import upgrade
    from service.db.models import Ballot
    from service.db.session import transaction
    from service.elections import ballots as ballot_service
    from service.elections import custody
    from service.elections import elections as election_service
    from service.security.secrets import server_secret

    timings = Timings()
    rng = random.Random(seed)
    pipe = Pipeline(settings, created_by="demo")
    db = pipe.factory
    if resume is not None:
        # Refused before Ray starts: a guardian-held run is started again, not resumed.
        from cli.demo_held import refuse_resume
        from service.db.models import Election

        upgrade(settings.sqlalchemy_url)  # the interrupted run's database: nothing to do
        with transaction(db) as s:
            interrupted = s.get(Election, resume)
            if interrupted is not None and interrupted.key_mode == "guardian":
                raise refuse_resume(resume)
    pipe.connect()
    upgrade(settings.sqlalchemy_url)
    credentials: dict[str, tuple[dict[str, Any], str]] | None

    if resume is None:
        console.print(
            f"[bold]amarvote demo[/bold]: {n_ballots} ballots, {n} guardians (custodial), quorum {k}, "
            f"{n_missing} missing, chunks of {chunk_size}; {mode(settings)}"
        )
        with timings.phase("key ceremony"):
            ids = [f"guardian-{i + 1}" for i in range(n)]
            with transaction(db) as s:
                e = election_service.create_election(
                    s,
                    name="amarvote demo",
                    number_of_guardians=n,
                    quorum=k,
                    manifest=demo_manifest(),
                    created_by="demo",
                )
                eid = e.id
                # Custodial: each private record stays sealed under the server secret until claimed.
                election_service.run_key_ceremony(s, eid, ids, server_secret(settings))
                election_service.open_election(s, eid)
                manifest, context, state = e.manifest, e.context, e.state
        where = f"AMARVOTE_DATA_DIR={settings.data_dir} " if settings.database_url is None else ""
        console.print(
            f"election {eid}; if interrupted, continue with: {where}amarvote demo --resume {eid}"
            f" --seed {seed} --ballots {n_ballots} --missing {n_missing} --spoil-every {spoil_every}"
        )
        with timings.phase("claims"):
            # Each guardian that will decrypt claims its credential file with its own passphrase; the
            # absent ones never do, so theirs stays in the service's custody.
            absent = ids[len(ids) - n_missing :] if n_missing else []
            credentials = _claim(pipe, eid, [g for g in ids if g not in absent], _claims_dir(settings, eid))
    else:
        with transaction(db) as s:
            e = election_service.get_election(s, resume)
            if e.context is None:
                raise typer.BadParameter(f"election {resume} has no keys: its key ceremony never finished")
            eid, manifest, context, state = e.id, e.manifest, e.context, e.state
            ids = [g.guardian_id for g in election_service.guardians_of(s, eid)]
            held = [g for g, at in custody.claims_of(s, eid).items() if at is None]
        console.print(f"[bold]amarvote demo[/bold]: resuming election {eid} ({state}); {mode(settings)}")
        absent = ids[len(ids) - n_missing :] if n_missing else []
        # A guardian that had not claimed its file before the interruption claims it now; a claimed
        # file's passphrase lived only in the interrupted process.
        unclaimed = [g for g in ids if g not in absent and g in held]
        credentials = _claim(pipe, eid, unclaimed, _claims_dir(settings, eid)) if unclaimed else None

    plaintexts, expected = synthetic_ballots(manifest, n_ballots, spoil_every, rng)
    with pipe.running(), progress_bars() as bar:
        report = pipe.progress = reporter(bar)
        if state == "open":
            with timings.phase("encrypt + cast"):
                with transaction(db) as s:
                    stored = set(s.scalars(select(Ballot.object_id).where(Ballot.election_id == eid)))
                todo = [p for p in plaintexts if p[0]["object_id"] not in stored]
                encrypt_batch = _encrypt_remote()
                refs = [
                    encrypt_batch.remote(todo[i : i + ENCRYPT_BATCH], manifest, context, eid)
                    for i in range(0, len(todo), ENCRYPT_BATCH)
                ]
                done = len(stored)
                while refs:
                    ready, refs = ray.wait(refs, num_returns=1)
                    rows = ray.get(ready[0])
                    with transaction(db) as s:
                        ballot_service.store(s, eid, rows)
                    done += len(rows)
                    report("encrypt + cast", done, n_ballots)
                with transaction(db) as s:
                    election_service.close_election(s, eid)
        if resume is None:
            assert credentials is not None
            pipe.run_jobs(eid, chunk_size, credentials, absent, timings)
        else:
            pipe.resume_jobs(eid, chunk_size, credentials, absent, timings)
        with timings.phase("verify job"):
            # What an operator runs through the API (POST /api/verify/create): the same checks as the
            # record's, from the database, one task per tally chunk.
            verdict = pipe.verify(eid)

    failed = _report(pipe, settings, eid, out, verdict, expected, timings, n_ballots)
    with transaction(db) as s:
        claims = custody.claims_of(s, eid)
    _print_secrets(claims, _claims_dir(settings, eid))
    if failed:
        raise typer.Exit(1)


def _report(
    pipe: Any,
    settings: Any,
    eid: int,
    out: Path | None,
    verdict: dict[str, Any],
    expected: Counter[tuple[str, str]],
    timings: Any,
    n_ballots: int,
) -> bool:
    """Export and verify the record, print the result against the plaintexts and the timings; whether
    anything failed."""
    from service.db.session import transaction
    from service.elections.results import results

    with transaction(pipe.factory) as s:
        result = results(s, eid)
    with timings.phase("export + verify"):
        record_dir = pipe.export_record(eid, out or settings.data_dir / f"election-{eid}")
        # On the Ray the jobs ran on: verification is the longest phase of a large election.
        outcome = check_record(record_dir, settings)
        problems = outcome.problems + [f"{f.chunk}: not checked: {f.error}" for f in outcome.failed_chunks]
    problems += [f"verify job: {p}" for p in verdict["problems"]]  # its first ones: empty when verified

    _print_result(result, expected)
    _print_timings(timings, n_ballots)
    got = Counter(
        {
            (c["contest_id"], s["selection_id"]): s["votes"]
            for c in result["contests"]
            for s in c["selections"]
            if s["votes"]
        }
    )
    console.print(f"record: {record_dir}")
    failed = got != expected or bool(problems)
    if got != expected:
        console.print("[red]the decrypted counts differ from the plaintexts that were cast[/red]")
    for p in problems:
        console.print(f"[red]FAIL[/red] {p}")
    if not failed:
        console.print(
            "[green]counts equal the cast plaintexts; the record verifies, and so does the verify job"
            f"[/green] (`amarvote record verify {record_dir}`)"
        )
    return failed


def _run_held(
    settings: Any,
    n_ballots: int,
    chunk_size: int,
    n: int,
    k: int,
    n_missing: int,
    spoil_every: int,
    out: Path | None,
    seed: int,
) -> None:
    """The guardian-held election: see ``cli/demo_held.py``."""
    import ray

    from cli import demo_held
    from cli.pipeline import Pipeline, Timings
    from service.db.migrate import upgrade
    from service.security.auth import Role, issue_token
    from service.security.secrets import jwt_key

    timings = Timings()
    rng = random.Random(seed)
    settings = demo_held.api_settings(settings)
    pipe = Pipeline(settings, created_by="demo")
    pipe.connect()
    upgrade(settings.sqlalchemy_url)
    console.print(
        f"[bold]amarvote demo[/bold]: {n_ballots} ballots, {n} guardians (guardian-held), quorum {k}, "
        f"{n_missing} missing, chunks of {chunk_size}; {mode(settings)}"
    )
    ids = [f"guardian-{i + 1}" for i in range(n)]
    absent = ids[len(ids) - n_missing :] if n_missing else []
    manifest = demo_manifest()
    plaintexts, expected = synthetic_ballots(manifest, n_ballots, spoil_every, rng)
    with demo_held.served(settings) as url, pipe.running(), progress_bars() as bar:
        report = pipe.progress = reporter(bar)
        admin = demo_held.Admin(url, issue_token(settings, "demo-admin", Role.ADMIN, key=jwt_key(settings)))
        with timings.phase("key ceremony"):
            e = admin(
                "POST",
                "/api/elections",
                name="amarvote demo",
                number_of_guardians=n,
                quorum=k,
                manifest=manifest,
            )
            eid = int(e["election_id"])
            base = demo_held.guardians_dir(settings, eid)
            where = f"AMARVOTE_DATA_DIR={settings.data_dir} " if settings.database_url is None else ""
            bar.console.print(
                f"election {eid}; guardians' folders in {base} (a demo: each guardian's passphrase is"
                f" generated and written into its own folder); to inspect later: {where}amarvote jobs list",
                soft_wrap=True,
            )
            started = admin("POST", f"/api/elections/{eid}/ceremony", guardian_ids=ids)
            guardians = demo_held.init_guardians(url, eid, started, base)
            demo_held.run_ceremony(guardians)
            context = admin.api.get(f"/api/elections/{eid}/context")
        with timings.phase("encrypt + cast"):
            admin("POST", f"/api/elections/{eid}/open")
            encrypt_batch = _encrypt_remote(as_json=True)
            refs = [
                encrypt_batch.remote(plaintexts[i : i + ENCRYPT_BATCH], manifest, context, eid)
                for i in range(0, len(plaintexts), ENCRYPT_BATCH)
            ]
            done = 0
            while refs:
                ready, refs = ray.wait(refs, num_returns=1)
                batch = ray.get(ready[0])
                admin("POST", f"/api/elections/{eid}/ballots/bulk", ballots=batch)
                done += len(batch)
                report("encrypt + cast", done, n_ballots)
            admin("POST", f"/api/elections/{eid}/close")
        with timings.phase("tally"):
            job = admin("POST", "/api/tally/create", election_id=eid, chunk_size=chunk_size)
            pipe.wait_for_jobs([uuid.UUID(job["jobId"])], "tally")
        with timings.phase("decryption"):
            admin("POST", f"/api/elections/{eid}/missing-guardians", guardian_ids=absent)
            jobs: list[str] = []
            split = []
            for g in guardians:
                if g.guardian_id in absent:
                    continue
                got, t = demo_held.decrypt(g, bar)
                jobs += got
                split.append(t)
                rss = f", peak RSS of this process {t.peak_rss_mb:.0f} MB" if t.peak_rss_mb else ""
                bar.console.print(
                    f"{t.guardian_id} decrypt: checks {t.checks:.2f} s ({t.cast} cast ballots), shares"
                    f" {t.shares:.2f} s ({t.units} units, {n_missing} missing compensated){rss}",
                    soft_wrap=True,
                )
            pipe.wait_for_jobs([uuid.UUID(j) for j in jobs], "decryption")
        with timings.phase("combine"):
            job = admin("POST", "/api/combine/decryption", election_id=eid)
            pipe.wait_for_jobs([uuid.UUID(job["jobId"])], "combine")
        with timings.phase("verify job"):
            job = admin("POST", "/api/verify/create", election_id=eid)
            pipe.wait_for_jobs([uuid.UUID(job["jobId"])], "verify")
            verdict = admin.api.get(f"/api/jobs/{job['jobId']}/status")["verification"]
        admin.close()

    failed = _report(pipe, settings, eid, out, verdict, expected, timings, n_ballots)
    demo_held.print_secrets(guardians)
    if failed:
        raise typer.Exit(1)


def _claims_dir(settings: Any, eid: int) -> Path:
    return Path(settings.data_dir).resolve() / f"election-{eid}-credentials"


def _claim(
    pipe: Any, eid: int, guardian_ids: list[str], folder: Path
) -> dict[str, tuple[dict[str, Any], str]]:
    """Each guardian claims its credential file with its own passphrase (a random one, kept in this
    process's memory only); the files are written to ``folder`` (0700, each file 0600)."""
    import os

    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    credentials = {}
    for g in guardian_ids:
        passphrase = secrets.token_urlsafe(16)
        file = pipe.claim(eid, g, passphrase)
        path = folder / f"{g}.credential.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(file, f, indent=1)
        credentials[g] = (file, passphrase)
    return credentials


def _print_secrets(claims: dict[str, Any], folder: Path) -> None:
    """Where the guardians' secrets are: the demo's last lines."""
    held = [g for g, at in claims.items() if at is None]
    claimed = [g for g, at in claims.items() if at is not None]
    # Unwrapped, so the folder can be copied whole.
    console.print(
        "guardians' secrets (custodial): sealed under the server secret until claimed;"
        f" claimed files are in {folder}",
        soft_wrap=True,
    )
    console.print(
        f"  still held by the service (table custodial_claim): {', '.join(held) or 'none'}; the service,"
        " and whoever runs it, can decrypt with them while it holds them",
        soft_wrap=True,
    )
    console.print(
        f"  claimed: {', '.join(claimed) or 'none'} (each file sealed under a passphrase this run kept in"
        " memory only; the service erased its copy at the claim)",
        soft_wrap=True,
    )


def _print_result(result: dict[str, Any], expected: Counter[tuple[str, str]]) -> None:
    table = Table("contest", "selection", "votes", "expected", title="Result (cast ballots)")
    for c in result["contests"]:
        for s in c["selections"]:
            key = (c["contest_id"], s["selection_id"])
            table.add_row(c["contest_id"], s["selection_id"], str(s["votes"]), str(expected.get(key, 0)))
    console.print(table)
    spoiled = result.get("spoiled_ballots") or []
    if spoiled:
        console.print(f"spoiled ballots decrypted: {len(spoiled)}")


def _print_timings(timings: Any, n_ballots: int) -> None:
    table = Table("phase", "seconds", "ballots/s", title="Timings")
    for name, sec in timings.phases.items():
        rate = f"{n_ballots / sec:.1f}" if name in ("encrypt + cast", "tally") and sec else ""
        table.add_row(name, f"{sec:.2f}", rate)
    console.print(table)
