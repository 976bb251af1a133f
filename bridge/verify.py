"""``record verify`` on the cluster: a record's units checked as Ray tasks, retried by our policy.

The units and the closing are those of every verifier (``compute.verify``: ``Plan.units``, ``check_unit``,
``Summary``); this module only runs them on Ray. The driver reads the record's small files once
(``compute.record.header_files``) and puts them in Ray's object store; then it reads a chunk's ballot
files (with the decryption of each spoiled one), puts them in the object store and hands them to a task,
never more than one unit per CPU (plus one) nor ``in_flight_bytes`` of files at a time (a unit's bytes
stay in the object store until it is done, so that a retry sends them again without reading them again:
the budget is what bounds the driver's memory on a large cluster). A task parses and checks them and
returns a ``ChunkReport``; the driver adds the reports up (``Summary``) and makes the checks that need
them all. So the driver holds the header, a few units in flight and 8 bytes per selection ciphertext; a
worker, one unit. Tasks carry the record's public data only (a record holds no secret), as bytes, so the
record need only be readable by the driver, not by every node.

Retries are ours, not Ray's: as the executor does, each task runs with ``max_retries=0`` and
``retry_exceptions=False``, and a unit whose task fails (its exception, or its worker dying) is sent again
after the backoff of ``service.jobs.transitions.Policy`` (the executor's policy object, from the same
settings: ``max_attempts``, ``retry_backoff_seconds``) until its attempts are used. A check that fails is
a problem of the record (named in ``Outcome.problems``); a unit that failed every attempt was not checked:
``Outcome.failed_chunks``, which the CLI turns into ``VerifyFailed``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from bridge.error_text import describe_error
from bridge.ray_runtime import ensure_ray
from bridge.verify_unit import verify_unit
from compute.verify import FailedChunk, Outcome, Unit
from service.jobs.transitions import Policy
from service.settings import Settings

log = logging.getLogger(__name__)

# About 1 s of checks and 16 MB of files per task (3 contests): large enough that Ray's overhead does not
# show, small enough that a few in flight keep the driver and a worker far under 500 MB.
CHUNK_BALLOTS = 200
IN_FLIGHT_BYTES = 96 * 2**20


def _submit(key: str, header_ref: Any, unit: Unit, items_ref: Any) -> Any:
    # Ray's retries off, as the executor's: a failed attempt comes back to the driver, which retries it.
    return verify_unit.options(max_retries=0, retry_exceptions=False).remote(key, header_ref, unit, items_ref)


@dataclass
class _InFlight:
    unit: Unit
    items: Any  # the ObjectRef of its files, kept for a retry
    size: int  # bytes of files it carries
    attempts: int = 1
    due: float = 0.0  # when a failed attempt is sent again (time.monotonic())


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
    policy: Policy | None = None,
) -> Outcome:
    """Verify the record at ``path`` (directory or zip) over the configured Ray; a failed unit is retried
    by ``policy`` (by default the executor's, ``Policy.from_settings(settings)``)."""
    from compute.record import header_files, header_from_files, open_record
    from compute.verify import RecordCheck, add_report, ballots_again, load_unit, plan_chunks, start

    policy = policy or Policy.from_settings(settings)
    with open_record(path) as source:
        files = header_files(source)
        check = RecordCheck(header_from_files(files))
        plan = plan_chunks(source, chunk_ballots)
        summary = start(check, plan)
        ensure_ray(settings)
        limit = in_flight or max(2, int(ray.cluster_resources().get("CPU", 1)) + 1)
        key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        header_ref = ray.put(files)
        units = iter([plan.units()[-1], *plan.units()[:-1]])  # the tally's shares first: the longest
        running: dict[Any, _InFlight] = {}
        waiting: list[_InFlight] = []  # failed, sent again when due
        held: tuple[Unit, list[tuple[str, bytes, bytes | None]], int] | None = None  # read, not yet sent
        done = 0
        while True:
            in_flight_now = sum(f.size for f in running.values()) + sum(f.size for f in waiting)
            while len(running) + len(waiting) < limit + 1:
                if held is None:
                    unit = next(units, None)
                    if unit is None:
                        break
                    items = load_unit(source, unit)
                    held = unit, items, sum(len(b) + len(d or b"") for _, b, d in items)
                unit, items, size = held
                if in_flight_now and in_flight_now + size > in_flight_bytes:
                    break  # sent when a unit in flight is done
                flight = _InFlight(unit, ray.put(items), size)
                running[_submit(key, header_ref, unit, flight.items)] = flight
                in_flight_now += size
                held = None
                del items
            now = time.monotonic()
            for flight in [w for w in waiting if w.due <= now]:
                waiting.remove(flight)
                running[_submit(key, header_ref, flight.unit, flight.items)] = flight
            if not running and not waiting:
                break
            due = min((w.due for w in waiting), default=None)
            if not running:
                time.sleep(max(0.0, due - now) if due is not None else 0.0)
                continue
            timeout = None if due is None else max(0.0, due - now)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=timeout)
            if not ready:
                continue
            flight = running.pop(ready[0])
            unit = flight.unit
            try:
                report = ray.get(ready[0])
            except Exception as exc:  # the task's exception, or its worker lost
                error = describe_error(exc)
                if flight.attempts < policy.max_attempts:
                    log.info(
                        "record verify: %s attempt %s failed (%s); retried",
                        unit.describe(),
                        flight.attempts,
                        error,
                    )
                    flight.due = time.monotonic() + policy.backoff(flight.attempts).total_seconds()
                    flight.attempts += 1
                    waiting.append(flight)
                    continue
                log.warning(
                    "record verify: %s failed after %s attempt(s): %s",
                    unit.describe(),
                    flight.attempts,
                    error,
                )
                summary.fail(unit.position, FailedChunk(unit.describe(), error))
            else:
                add_report(summary, unit, report)
            del flight
            done += unit.ballots
            if progress is not None and unit.chunk is not None:
                progress(done, plan.ballots)
        summary.close(plan.stray_decryptions, lambda: ballots_again(source, plan))
    return summary.outcome(len(plan.chunks))
