"""The guardian's decryption: check what it is asked to decrypt against what the election published, then
compute its shares of every unit (and its compensated shares for each declared missing guardian) on this
machine, upload them one unit at a time, submit, and follow the jobs that check them."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rich.progress import Progress

from cli.guardian.api import Api, ApiError, GuardianError
from cli.guardian.folder import Folder
from compute.ballot import SubmittedBallot
from compute.ceremony import check_published_context
from compute.context import ElectionContext
from compute.decryption_checks import PublishedCheck
from compute.decryption_target import Target
from compute.guardian import GuardianRecord, PrivateGuardianRecord
from compute.ids import is_safe_id
from compute.manifest import InternalManifest, Manifest
from compute.tally import CiphertextTally
from compute.uploaded_shares import hold_for_workers, make_unit_document, unit_document_in_worker

PAGE = 1000
SPOILED_PAGE = 100  # spoiled ballots fetched, then validated together (proofs batched), at a time
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


class Refused(GuardianError):
    """What the guardian was asked to decrypt is not what the election published: nothing was computed."""


def unit_label(u: dict[str, Any]) -> str:
    return f"{u['kind']} {u['number']} (unit {u['unit_id']})"


def targets_hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(doc["targets"], sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


@dataclass
class Timings:
    checks: float = 0.0
    shares: float = 0.0
    jobs: float = 0.0
    units: int = 0
    cast: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Decryption:
    def __init__(
        self,
        api: Api,
        folder: Folder,
        record: PrivateGuardianRecord,
        progress: Progress,
        say: Callable[[str], None],
    ) -> None:
        self.api, self.folder, self.record, self.progress, self.say = api, folder, record, progress, say
        self.base = f"/api/elections/{folder.election_id}"
        self.gid = folder.guardian_id
        self.timings = Timings()

    # ------------------------------------------------------------------------------ what to decrypt

    def _pages(self, path: str) -> Iterator[list[dict[str, Any]]]:
        after: int | None = 0
        while after is not None:
            page = self.api.get(f"{self.base}/{path}", after=after, limit=PAGE)
            yield page["ballots"]
            after = page["next_after"]

    def context(self) -> ElectionContext:
        """The election's context, checked against the keys this guardian kept from its ceremony."""
        context = ElectionContext.from_json(self.api.get(f"{self.base}/context"))
        keys = list(self.record.guardian_election_public_keys.values())
        if len(keys) != context.number_of_guardians:
            raise GuardianError(
                f"the sealed record holds {len(keys)} guardians' public keys, the election has"
                f" {context.number_of_guardians}: run `amarvote guardian ceremony` to complete it"
            )
        problems = check_published_context(
            self.record.election_keys.share(), keys, context, context.manifest_hash
        )
        if problems:
            raise Refused(
                "the election's context is not the one this guardian confirmed: " + "; ".join(problems)
            )
        return context

    def units(self) -> dict[str, Any]:
        declared = self.api.get(f"{self.base}/missing-guardians")
        if not declared["declared"]:
            raise GuardianError(
                f"the administrator has not declared election {self.folder.election_id}'s missing guardians"
                " yet (POST .../missing-guardians, even with none): try again once it has"
            )
        if self.gid in declared["guardian_ids"]:
            raise GuardianError(f"guardian {self.gid!r} was declared missing: the others compensate for it")
        units: dict[str, Any] = self.api.get(f"{self.base}/decryption-units")
        return units

    def manifest(self, context: ElectionContext) -> InternalManifest:
        """The election's manifest, which must hash to the context's (checked against this guardian's
        keys): the one its ballots are validated against."""
        try:
            manifest = InternalManifest.from_manifest(
                Manifest.from_json(self.api.get(f"{self.base}/manifest")["manifest"])
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Refused(
                f"the election's manifest as served is malformed: {type(exc).__name__}: {exc}"
            ) from None
        if manifest.manifest_hash != context.manifest_hash:
            raise Refused(
                "refusing to decrypt: the manifest served is not the one the election's context (which this"
                " guardian confirmed) was made for: its hash differs"
            )
        return manifest

    def _check_spoiled(self, check: PublishedCheck, context: ElectionContext) -> None:
        """Each ballot presented for individual decryption, as the election published it
        (``GET .../ballots/{id}``), ``SPOILED_PAGE`` at a time: spoiled, valid (every proof, hash and the
        tracking code) and exactly its unit's target (``PublishedCheck.add_spoiled_ballots``). One the API
        does not serve stays unchecked, which ``problems()`` names."""
        ids = check.spoiled_to_check()
        if not ids:
            return
        manifest = self.manifest(context)
        task = self.progress.add_task("spoiled ballots", total=len(ids))
        for start in range(0, len(ids), SPOILED_PAGE):
            page: list[SubmittedBallot] = []
            for bid in ids[start : start + SPOILED_PAGE]:
                if not is_safe_id(bid):
                    continue  # no route serves it (the unit named a ballot no voter could have): unchecked
                try:
                    doc = self.api.get(f"{self.base}/ballots/{bid}")
                except ApiError as exc:
                    if exc.status == 404:
                        continue
                    raise
                try:
                    page.append(SubmittedBallot.from_json(doc))
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise Refused(
                        f"refusing to decrypt: spoiled ballot {bid} (presented for decryption) is served"
                        f" malformed: {type(exc).__name__}: {exc}"
                    ) from None
            check.add_spoiled_ballots(page, manifest, context)
            self.progress.advance(task, len(ids[start : start + SPOILED_PAGE]))

    def check(self, units: list[dict[str, Any]], context: ElectionContext) -> dict[int, str]:
        """Everything of ``compute/decryption_checks.py``, the spoiled ballots validated against
        ``context`` and its manifest; the hash of each unit's targets as checked (the same must be served
        again for the shares). Refused: ``Refused`` naming why."""
        started = time.monotonic()
        aggregate = CiphertextTally.from_json(self.api.get(f"{self.base}/encrypted-tally"))
        check = PublishedCheck(aggregate)
        for page in self._pages("spoiled-ballots"):
            check.add_spoiled_ids(b["object_id"] for b in page)
        hashes: dict[int, str] = {}
        task = self.progress.add_task("checking units", total=len(units))
        for u in units:
            doc = self.api.get(f"{self.base}/decryption-units/{u['unit_id']}")
            hashes[u["unit_id"]] = targets_hash(doc)
            check.add_unit(unit_label(u), doc["kind"], [Target.from_json(t) for t in doc["targets"]])
            self.progress.advance(task)
        self._check_spoiled(check, context)
        task = self.progress.add_task("cast ballots", total=None)
        try:
            for page in self._pages("cast-ciphertexts"):
                check.add_cast_page(page)
                self.progress.advance(task, len(page))
            if check.suspects():
                for page in self._pages("cast-ciphertexts"):
                    check.add_suspect_page(page)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        self.progress.update(task, total=check.cast, completed=check.cast)
        self.timings.checks = time.monotonic() - started
        self.timings.cast = check.cast
        if problems := check.problems():
            raise Refused(
                "refusing to decrypt: what this guardian is asked to decrypt is not what election"
                f" {self.folder.election_id} published:\n  - " + "\n  - ".join(problems)
            )
        return hashes

    # ------------------------------------------------------------------------------------ the shares

    def _missing(self, ids: list[str]) -> list[GuardianRecord]:
        """The missing guardians' public records from the keys this guardian kept from its ceremony (not
        from the service: its compensated shares are proved against those commitments)."""
        out = []
        for m in ids:
            key = self.record.guardian_election_public_keys.get(m)
            if key is None or m not in self.record.guardian_election_partial_key_backups:
                raise GuardianError(f"the sealed record holds no key or backup of guardian {m!r}")
            out.append(GuardianRecord.from_public_key(key))
        return out

    def upload(
        self,
        units: list[dict[str, Any]],
        hashes: dict[int, str],
        missing: list[str],
        context: ElectionContext,
        workers: int,
    ) -> None:
        started = time.monotonic()
        state = self.folder.state()
        records = self._missing(missing)
        todo = [u for u in units if state["uploaded"].get(str(u["unit_id"])) != hashes[u["unit_id"]]]
        task = self.progress.add_task("shares uploaded", total=len(units), completed=len(units) - len(todo))

        def fetch(u: dict[str, Any]) -> dict[str, Any]:
            doc: dict[str, Any] = self.api.get(f"{self.base}/decryption-units/{u['unit_id']}")
            if targets_hash(doc) != hashes[u["unit_id"]]:
                raise Refused(f"{unit_label(u)} changed between its check and its decryption: refusing")
            return doc

        def put(u: dict[str, Any], body: dict[str, Any]) -> None:
            self.api.call("PUT", f"{self.base}/guardians/{self.gid}/shares/{u['unit_id']}", json=body)
            state["uploaded"][str(u["unit_id"])] = hashes[u["unit_id"]]
            self.folder.save_state(state)
            self.progress.advance(task)

        if workers <= 1:
            for u in todo:
                doc = fetch(u)
                targets = [Target.from_json(t) for t in doc["targets"]]
                put(u, make_unit_document(self.record, records, doc["kind"], targets, context))
        else:
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=hold_for_workers,
                initargs=(self.record.to_json(), [r.to_json() for r in records], context.to_json()),
            )
            with pool:
                pending: list[tuple[dict[str, Any], Future[dict[str, Any]]]] = []
                for u in todo:
                    doc = fetch(u)
                    pending.append((u, pool.submit(unit_document_in_worker, doc["kind"], doc["targets"])))
                    while len(pending) >= 2 * workers:  # bounded: at most 2 units a worker in flight
                        done_u, fut = pending.pop(0)
                        put(done_u, fut.result())
                for done_u, fut in pending:
                    put(done_u, fut.result())
        self.timings.shares = time.monotonic() - started
        self.timings.units = len(units)

    def prepare(self, workers: int) -> list[str]:
        """What ``amarvote guardian decrypt`` does before it waits: the context checked against this
        guardian's keys, every check of what it is asked to decrypt, then its shares computed, uploaded
        and submitted; the jobs that check them."""
        context = self.context()
        units = self.units()
        hashes = self.check(units["units"], context)
        self.progress.console.print(
            f"checked: the aggregate is the product of the {self.timings.cast} cast ballots, no ciphertext"
            f" repeats, the {len(units['units'])} units decrypt only the aggregate and published spoiled"
            f" ballots, each valid ({self.timings.checks:.1f} s)"
        )
        self.upload(units["units"], hashes, list(units["missing_guardian_ids"]), context, workers)
        return self.submit()

    def submit(self) -> list[str]:
        state = self.folder.state()
        if state.get("jobs"):
            return list(state["jobs"])
        try:
            out = self.api.call("POST", f"{self.base}/guardians/{self.gid}/shares/submit", json={})
        except ApiError as exc:
            if exc.status == 409 and "already submitted" in exc.detail:
                jobs = self.own_jobs()
                if jobs:
                    state["jobs"] = jobs
                    self.folder.save_state(state)
                    return jobs
            raise
        jobs = [out["jobId"], *(j["jobId"] for j in out.get("compensatedJobs", []))]
        state["jobs"] = jobs
        self.folder.save_state(state)
        self.say(f"submitted: {len(jobs)} job(s) check the shares on the cluster")
        return jobs

    def own_jobs(self) -> list[str]:
        jobs = self.api.get("/api/jobs", election_id=self.folder.election_id)
        return [
            j["jobId"]
            for j in reversed(jobs)
            if j["operationType"] in ("PARTIAL_DECRYPTION", "COMPENSATED_DECRYPTION")
            and j.get("guardianId") == self.gid
            and (j.get("metadata") or {}).get("shares") == "uploaded"
        ]

    def wait(self, jobs: list[str], timeout: float | None, interval: float = 1.0) -> list[dict[str, Any]]:
        started = time.monotonic()
        tasks = {j: self.progress.add_task(f"job {j[:8]}", total=None) for j in jobs}
        while True:
            docs = [self.api.get(f"/api/jobs/{j}/status") for j in jobs]
            for d in docs:
                self.progress.update(
                    tasks[d["jobId"]],
                    total=d["totalChunks"] or None,
                    completed=d["processedChunks"] + d["failedChunks"],
                    description=f"{d['operationType'][:11].lower()} {d['jobId'][:8]}",
                )
            if all(d["status"] in TERMINAL for d in docs):
                self.timings.jobs = time.monotonic() - started
                return docs
            if timeout is not None and time.monotonic() - started > timeout:
                raise GuardianError(f"the jobs have not ended after {timeout:.0f} s: {', '.join(jobs)}")
            time.sleep(interval)
