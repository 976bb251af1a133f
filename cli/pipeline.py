"""Drive an election through its four jobs from one process: the demo and ``record run`` use this.

The jobs are created by the same service functions the API calls, and executed by the same worker a
deployment runs (``cli.worker.make_worker``: the executor over the embedded outbox when no AMQP URL is
set, else over RabbitMQ with its relay and housekeeping), in a background thread against the configured
Ray. This module only waits and reports; it does no cryptography of its own.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.db.models import ElectionJob, JobStatus, OperationType
from service.db.session import SessionFactory, session_factory, transaction
from service.jobs import planning, queries
from service.jobs.verification import verdict_of
from service.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (label, done, total)


@dataclass(frozen=True, slots=True)
class FailedJob:
    job_id: uuid.UUID
    operation: str
    guardian_id: str | None
    failed_chunks: int
    total_chunks: int
    first_error: str  # "chunk N: <ExceptionType>: <message>"


class JobFailed(RuntimeError):
    """Jobs of a phase ended FAILED; each is named with its failed chunks and its first error."""

    def __init__(self, label: str, jobs: Sequence[FailedJob]) -> None:
        self.label = label
        self.jobs = list(jobs)
        parts = []
        for j in self.jobs:
            who = f", guardian {j.guardian_id}" if j.guardian_id else ""
            parts.append(
                f"job {j.job_id} ({j.operation}{who}): {j.failed_chunks} of {j.total_chunks} chunk(s) FAILED;"
                f" first error: {j.first_error}"
            )
        super().__init__(f"{label} failed: " + "; ".join(parts))


@dataclass
class Timings:
    phases: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0


class ResumeError(RuntimeError):
    """An interrupted run cannot be continued from what the database holds; the reason says why."""


class Pipeline:
    """One election's jobs against the database and Ray of ``settings``."""

    def __init__(self, settings: Settings, progress: Progress | None = None, created_by: str = "cli") -> None:
        self.settings = settings
        self.factory: SessionFactory = session_factory(settings.sqlalchemy_url)
        self.progress = progress
        self.created_by = created_by

    def connect(self) -> None:
        """Connect to Ray and check its nodes first, so a cluster that cannot work is refused before the
        run writes anything."""
        from bridge.ray_runtime import connect

        connect(self.settings)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Run the chunk executor in a background thread for the duration of the block."""
        from cli.worker import make_worker

        worker = make_worker(self.settings)
        thread = threading.Thread(target=worker.run, name="amarvote-worker", daemon=True)
        thread.start()
        try:
            yield
        finally:
            worker.stop()
            thread.join(timeout=120)

    def wait_for_jobs(self, job_ids: Sequence[uuid.UUID], label: str, poll: float = 0.3) -> None:
        """Block until every job has ended; raise JobFailed naming the failed chunks of any that failed.

        A database that goes away (a restart) is waited for, with a notice, not an error: the jobs carry
        on in the workers, and so does this wait."""
        from service.db.session import is_disconnect

        delay = poll
        while True:
            try:
                if self._poll_jobs(job_ids, label):
                    return
                delay = poll
            except Exception as exc:
                if not is_disconnect(exc):
                    raise
                log.warning("database unreachable while waiting for the %s jobs; retrying", label)
                delay = min(delay * 2, 10.0)
            time.sleep(delay)

    def _poll_jobs(self, job_ids: Sequence[uuid.UUID], label: str) -> bool:
        from service.jobs.status import failed_chunks

        with transaction(self.factory) as s:
            jobs = list(s.scalars(select(ElectionJob).where(ElectionJob.job_id.in_(list(job_ids)))))
            total = sum(j.total_chunks for j in jobs)
            done = sum(j.processed_chunks for j in jobs)
            failed = [j for j in jobs if j.status == JobStatus.FAILED.value]
            if failed:
                reports = []
                for j in failed:
                    first = (failed_chunks(s, j.job_id, limit=1) or [{}])[0]
                    error = (first.get("error") or j.error_message or "unknown error").splitlines()[0]
                    where = f"{first.get('chunkKind', 'chunk')} {first.get('chunkNumber', '?')}"
                    reports.append(
                        FailedJob(
                            j.job_id,
                            j.operation_type,
                            j.guardian_id,
                            j.failed_chunks,
                            j.total_chunks,
                            f"{where}: {error[:300]}",
                        )
                    )
                raise JobFailed(label, reports)
            ended = all(j.status == JobStatus.COMPLETED.value for j in jobs)
        if self.progress:
            self.progress(label, done, total)
        return ended

    def tally(self, election_id: int, chunk_size: int) -> uuid.UUID:
        with transaction(self.factory) as s:
            job_id = planning.create_tally_job(s, election_id, chunk_size, self.created_by).job_id
        self.wait_for_jobs([job_id], "tally")
        return job_id

    def decrypt(
        self,
        election_id: int,
        credentials: dict[str, tuple[dict[str, Any], str]],
        missing: Sequence[str],
    ) -> list[uuid.UUID]:
        """Each available guardian's partial decryption, with compensated shares for the missing ones."""
        job_ids = self._start_decryptions(election_id, credentials, missing)
        self.wait_for_jobs(job_ids, "decryption")
        return job_ids

    def _start_decryptions(
        self,
        election_id: int,
        credentials: dict[str, tuple[dict[str, Any], str]],
        missing: Sequence[str],
    ) -> list[uuid.UUID]:
        from service.elections.decryption import start_decryption
        from service.security.kdf_gate import kdf_gate
        from service.security.secrets import server_secret

        secret, gate = server_secret(self.settings), kdf_gate(self.settings)
        job_ids: list[uuid.UUID] = []
        for guardian_id, (credential_file, passphrase) in credentials.items():
            started = start_decryption(
                self.factory,
                secret,
                gate,
                election_id=election_id,
                guardian_id=guardian_id,
                credentials=credential_file,
                passphrase=passphrase,
                missing_guardian_ids=list(missing),
                created_by=self.created_by,
                sizes=planning.UnitSizes.from_settings(self.settings),
            )
            jobs = ([started.partial_job] if started.partial_job else []) + list(started.compensated_jobs)
            job_ids += [j.job_id for j in jobs]
        return job_ids

    def claim(self, election_id: int, guardian_id: str, passphrase: str) -> dict[str, Any]:
        """A custodial guardian's claim of its credential file (the service's copy erased), as the
        guardian's own token would make it over the API (``POST .../guardians/{id}/claim``)."""
        from service.elections import custody
        from service.security.auth import Principal, Role
        from service.security.kdf_gate import kdf_gate
        from service.security.sealing import KdfParams
        from service.security.secrets import server_secret

        s = self.settings
        guardian = Principal(f"guardian:{election_id}:{guardian_id}", Role.GUARDIAN, election_id, guardian_id)
        return custody.claim(
            self.factory,
            server_secret(s),
            kdf_gate(s),
            guardian,
            election_id=election_id,
            guardian_id=guardian_id,
            passphrase=passphrase,
            kdf=KdfParams(s.kdf_time_cost, s.kdf_memory_kib, s.kdf_parallelism),
        ).credentials

    def combine(self, election_id: int) -> uuid.UUID:
        with transaction(self.factory) as s:
            job_id = planning.create_combine_job(s, election_id, self.created_by).job_id
        self.wait_for_jobs([job_id], "combine")
        return job_id

    def verify(self, election_id: int) -> dict[str, Any]:
        """Verify a decrypted election from the database as a job on the cluster; its verdict."""
        with transaction(self.factory) as s:
            # A run resumed after an interruption waits for the verify job it had started.
            live = queries.jobs_of(s, election_id, OperationType.VERIFY, queries.LIVE_STATUSES)
            job = live[-1] if live else planning.create_verify_job(s, election_id, self.created_by)
            job_id = job.job_id
        self.wait_for_jobs([job_id], "verify")
        with transaction(self.factory) as s:
            done = s.get(ElectionJob, job_id)
            verdict = verdict_of(done) if done is not None else None
        assert verdict is not None, "a completed verify job has its verdict"
        return verdict

    def run_jobs(
        self,
        election_id: int,
        chunk_size: int,
        credentials: dict[str, tuple[dict[str, Any], str]],
        missing: Sequence[str],
        timings: Timings,
    ) -> None:
        """Tally a closed election, decrypt it with the given guardians (the missing compensated), combine."""
        with timings.phase("tally"):
            self.tally(election_id, chunk_size)
        with timings.phase("decryption"):
            self.decrypt(election_id, credentials, missing)
        with timings.phase("combine"):
            self.combine(election_id)

    def resume_jobs(
        self,
        election_id: int,
        chunk_size: int,
        credentials: dict[str, tuple[dict[str, Any], str]] | None,
        missing: Sequence[str],
        timings: Timings,
    ) -> None:
        """Continue an interrupted run from the database: wait for the jobs that exist, create the ones
        that do not. A guardian's decryption that was never started needs its credentials (``record
        run`` has them from its private records; the demo's lived only in the interrupted process)."""

        def latest(op: OperationType, **filters: Any) -> ElectionJob | None:
            with transaction(self.factory) as s:
                jobs = queries.jobs_of(s, election_id, op, queries.BLOCKING_STATUSES, **filters)
            return jobs[-1] if jobs else None

        with timings.phase("tally"):
            tally = latest(OperationType.TALLY)
            if tally is None:
                self.tally(election_id, chunk_size)
            else:
                self.wait_for_jobs([tally.job_id], "tally")
        with timings.phase("decryption"):
            with transaction(self.factory) as s:
                guardians = queries.guardian_ids_of(s, election_id)
            job_ids: list[uuid.UUID] = []
            to_start: dict[str, tuple[dict[str, Any], str]] = {}
            for g in (g for g in guardians if g not in missing):
                partial = latest(OperationType.PARTIAL_DECRYPTION, guardian_id=g)
                if partial is not None:
                    job_ids.append(partial.job_id)
                lacking = []
                for m in missing:
                    child = latest(OperationType.COMPENSATED_DECRYPTION, guardian_id=g, missing_guardian_id=m)
                    if child is None:
                        lacking.append(m)
                    else:
                        job_ids.append(child.job_id)
                if partial is None or lacking:
                    if credentials is None or g not in credentials:
                        raise ResumeError(
                            f"guardian {g}'s decryption was never started and its credentials are not"
                            " available to this run: start the election again"
                        )
                    to_start[g] = credentials[g]
            if to_start:
                job_ids += self._start_decryptions(election_id, to_start, missing)
            self.wait_for_jobs(job_ids, "decryption")
        with timings.phase("combine"):
            combine = latest(OperationType.COMBINE_DECRYPTION)
            if combine is None:
                self.combine(election_id)
            else:
                self.wait_for_jobs([combine.job_id], "combine")

    def export_record(self, election_id: int, out_dir: Path) -> Path:
        """The election record in the reference's layout under ``out_dir/election_record``."""
        from service.elections.results import write_record_dir

        with transaction(self.factory) as s:
            return write_record_dir(s, election_id, out_dir)
