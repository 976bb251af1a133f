"""``record verify`` on the cluster: a record's ballots checked in chunks, one Ray task per chunk.

The driver reads the record's small files once (``compute.record.header_files``) and puts them in Ray's
object store; then it reads a chunk's ballot files (with the decryption of each spoiled one) and hands
their bytes to a task, never more than one chunk per CPU (plus one) nor ``in_flight_bytes`` of files at a
time (a chunk's bytes sit in the driver while it is sent, and in the object store, whose pages the driver
wrote, until its task is done: the budget is what bounds the driver's memory on a large cluster). A task
parses and checks them
(``compute.verify.check_chunk``) and returns a ``ChunkReport``: problems, the product of the chunk's
cast ballots, fingerprint prefixes. Another task checks the tally's shares. The driver adds the reports
up and makes the checks that need them all (``RecordCheck.finish``). So the driver holds the header, a
few chunks in flight and 8 bytes per selection ciphertext; a worker, one chunk. Tasks carry the record's
public data only (a record holds no secret), as bytes, so the record need only be readable by the driver,
not by every node.

A check that fails is a problem of the record (named in ``Outcome.problems``); a task that fails (its
exception, or its worker dying twice more after the first time) is a chunk that was not checked:
``Outcome.failed_chunks``, which the CLI turns into ``VerifyFailed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from bridge.executor import describe_error
from bridge.ray_runtime import ensure_ray
from bridge.worker_memory import release_freed_memory
from compute.verify import Outcome
from service.settings import Settings

log = logging.getLogger(__name__)

# About 1 s of checks and 16 MB of files per task (3 contests): large enough that Ray's overhead does not
# show, small enough that a few in flight keep the driver and a worker far under 500 MB.
CHUNK_BALLOTS = 200
IN_FLIGHT_BYTES = 96 * 2**20
_MAX_RETRIES = 2  # the checks are pure: a task whose worker died is simply run again

# One RecordCheck per worker process, for the record being verified (by its header's digest).
_checks: dict[str, Any] = {}


def _check_for(key: str, header: dict[str, Any]) -> Any:
    from compute.record import header_from_files
    from compute.verify import RecordCheck

    if key not in _checks:
        _checks.clear()
        _checks[key] = RecordCheck(header_from_files(header))
    return _checks[key]


@ray.remote(max_retries=_MAX_RETRIES)
def _verify_chunk(key: str, header: dict[str, Any], items: list[tuple[str, bytes, bytes | None]]) -> Any:
    from compute.verify import check_chunk

    try:
        return check_chunk(_check_for(key, header), items)
    finally:
        release_freed_memory()


@ray.remote(max_retries=_MAX_RETRIES)
def _verify_tally(key: str, header: dict[str, Any]) -> Any:
    return _check_for(key, header).check_tally()


@dataclass(frozen=True)
class FailedChunk:
    chunk: str  # compute.verify.Chunk.describe(), or "the tally's shares"
    error: str  # "<ExceptionType>: <first line>"


class VerifyFailed(RuntimeError):
    """Chunks of a record that could not be checked (their task failed): each named, with its error."""

    def __init__(self, record: Path, failed: list[FailedChunk], chunks: int) -> None:
        self.record = record
        self.failed = failed
        self.chunks = chunks
        first = failed[0]
        names = "; ".join(f.chunk for f in failed[:5]) + (
            f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
        )
        super().__init__(
            f"verifying {record}: {len(failed)} of {chunks} chunk(s) could not be checked ({names});"
            f" first error: {first.chunk}: {first.error}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickling calls cls(*self.args), and args holds only the message: rebuild from the fields.
        return type(self), (self.record, self.failed, self.chunks), self.__dict__


Progress = Callable[[int, int], None]


def verify_on_ray(
    settings: Settings,
    path: Path,
    chunk_ballots: int = CHUNK_BALLOTS,
    progress: Progress | None = None,
    in_flight: int | None = None,
    in_flight_bytes: int = IN_FLIGHT_BYTES,
) -> Outcome:
    """Verify the record at ``path`` (directory or zip) over the configured Ray."""
    from compute.record import header_files, header_from_files, open_record
    from compute.verify import RecordCheck, Totals, ballots_again, load_chunk, plan_chunks

    with open_record(path) as source:
        files = header_files(source)
        check = RecordCheck(header_from_files(files))
        plan = plan_chunks(source, chunk_ballots)
        ensure_ray(settings)
        limit = in_flight or max(2, int(ray.cluster_resources().get("CPU", 1)) + 1)
        key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        header_ref = ray.put(files)
        totals = Totals()
        # Chunks land in any order: their problems and failures are put back in chunk order.
        by_chunk: dict[int, list[str]] = {}
        failed: dict[int, FailedChunk] = {}
        named: dict[int, str] = {}
        # ref -> (chunk number, what it is, ballots, bytes of files it carries)
        pending: dict[Any, tuple[int, str, int, int]] = {
            _verify_tally.remote(key, header_ref): (0, "the tally's shares", 0, 0)
        }
        chunks = iter(plan.chunks)
        held: tuple[Any, list[tuple[str, bytes, bytes | None]], int] | None = None  # read, not yet sent
        done = 0
        while True:
            while len(pending) < limit + 1:
                if held is None:
                    chunk = next(chunks, None)
                    if chunk is None:
                        break
                    items = load_chunk(source, chunk)
                    held = chunk, items, sum(len(b) + len(d or b"") for _, b, d in items)
                chunk, items, size_bytes = held
                in_flight_now = sum(p[3] for p in pending.values())
                if in_flight_now and in_flight_now + size_bytes > in_flight_bytes:
                    break  # sent when a chunk in flight is done
                ref = _verify_chunk.remote(key, header_ref, items)
                pending[ref] = (chunk.number, chunk.describe(), len(chunk.ids), size_bytes)
                held = None
                del items
            if not pending:
                break
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            number, what, size, _bytes = pending.pop(ready)
            done += size
            try:
                report = ray.get(ready)
            except Exception as exc:  # the task's exception, or its worker lost after every retry
                log.warning("record verify: %s failed: %s", what, describe_error(exc))
                failed[number] = FailedChunk(what, describe_error(exc))
            else:
                by_chunk[number], report.problems = report.problems, []
                if by_chunk[number] and number:
                    named[number] = what
                totals.add(report)
            if progress is not None and number:
                progress(done, plan.ballots)
        problems = plan.layout + check.header_problems()  # an entry it cannot place is never skipped
        for number in sorted(by_chunk, key=lambda n: (n == 0, n)):  # the ballots, then the tally
            problems += by_chunk[number]
        problems += check.finish(
            totals, plan.stray_decryptions, lambda: ballots_again(source, plan), complete=not failed
        )
    return Outcome(
        totals.ballots,  # the ballots checked: a chunk whose task failed is in failed_chunks instead
        totals.cast,
        totals.spoiled,
        len(check.header.guardians),
        len(plan.chunks),
        problems,
        [named[n] for n in sorted(named)],
        [failed[n] for n in sorted(failed, key=lambda n: (n == 0, n))],
        sorted(set(totals.failed_ballots)),
    )
