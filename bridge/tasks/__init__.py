"""Ray task bodies: one chunk task per Ray task, one body per operation.

A body gets a :class:`ChunkContext` (the claim's ids, a session factory of its own process and the
worker's own settings), loads its chunk from the database, calls ``compute/``, and commits its result
together with the task's DONE state through :meth:`ChunkContext.complete`. It returns the transition's
outcome. An exception is the attempt's failure: the bridge records it with ``transitions.fail``
(attempts are counted in PostgreSQL), so Ray is told never to retry exceptions itself.

Bodies are named by import path (``"module:function"``) rather than passed as functions, so a
Ray worker on another machine imports them itself, and a bridge can be configured with other
bodies (tests use bodies that count, sleep or always raise).
"""

from __future__ import annotations

import importlib
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridge import metrics
from bridge.worker_memory import release_freed_memory
from service.db.models import Ballot, ElectionCenter, OperationType
from service.db.session import SessionFactory, in_transaction, session_factory, with_own_password
from service.jobs import transitions
from service.jobs.transitions import Claim, Finalizer, Outcome, WriteResult
from service.settings import Settings

# The real bodies, by operation. Each module imports compute/ lazily, on the worker.
DEFAULT_BODIES: dict[str, str] = {
    OperationType.TALLY.value: "bridge.tasks.tally:run",
    OperationType.PARTIAL_DECRYPTION.value: "bridge.tasks.decryption:run_partial",
    OperationType.COMPENSATED_DECRYPTION.value: "bridge.tasks.decryption:run_compensated",
    OperationType.COMBINE_DECRYPTION.value: "bridge.tasks.combine:run",
    OperationType.VERIFY.value: "bridge.tasks.verify:run",
    # Jobs of shares a guardian uploaded (Claim.variant "uploaded"): check them, compute nothing.
    f"{OperationType.PARTIAL_DECRYPTION.value}:uploaded": "bridge.tasks.share_check:run_partial",
    f"{OperationType.COMPENSATED_DECRYPTION.value}:uploaded": "bridge.tasks.share_check:run_compensated",
}

# A batch of ballots is what a worker holds decoded at a time, whatever the chunk or election size.
# Bounded by count and by payload bytes: a ballot of a 100-selection manifest is ~20x one of a
# 5-selection manifest, so a fixed count alone would not bound memory. Decoded, a ballot takes a few
# times its payload size (Python objects around the big integers).
STREAM_BATCH = 500
STREAM_BATCH_BYTES = 4 * 2**20

Body = Callable[["ChunkContext"], Outcome]


@dataclass(slots=True)
class ChunkContext:
    """What a body works with. ``settings`` are the worker's own (its environment: the database password
    and the server secret never travel in a Ray argument), built once per task by :func:`run_chunk` and
    passed down to every helper that needs one; none reads the process's settings itself."""

    claim: Claim
    database_url: str
    settings: Settings
    batch_size: int = STREAM_BATCH
    batch_bytes: int = STREAM_BATCH_BYTES
    ballots_processed: int = 0

    @property
    def factory(self) -> SessionFactory:
        return session_factory(self.database_url)

    def read(self, fn: Callable[[Session], Any]) -> Any:
        """Run a read in its own short transaction (retried if the connection drops)."""
        return in_transaction(self.factory, fn)

    def chunk(self) -> ElectionCenter:
        return self.read(lambda s: s.get(ElectionCenter, self.claim.chunk_id))

    def ballot_batches(self, chunk: ElectionCenter, state: int | None = None) -> Iterator[list[Ballot]]:
        """The chunk's ballots in seq order, a bounded batch at a time (keyset pagination).

        Each batch is its own short query, so no transaction or server-side cursor stays open for
        the length of a chunk, and a dropped connection costs one batch, not the chunk. Batches are
        as large as ``batch_size`` and ``batch_bytes`` allow (sized from the first payloads):
        proof checks are batched per call, and a larger batch is cheaper per ballot.
        """
        assert chunk.first_seq is not None and chunk.last_seq is not None
        in_chunk: tuple[Any, ...] = (
            Ballot.election_id == chunk.election_id,
            Ballot.seq >= chunk.first_seq,
            Ballot.seq <= chunk.last_seq,
        )
        if state is not None:  # only these ballots leave the database (spoiled ones among many cast)
            in_chunk = (*in_chunk, Ballot.state == state)
        sizes = self.read(
            lambda s: list(
                s.scalars(select(func.length(Ballot.payload)).where(*in_chunk).order_by(Ballot.seq).limit(20))
            )
        )
        if not sizes:
            return
        limit = max(1, min(self.batch_size, self.batch_bytes * len(sizes) // max(sum(sizes), 1)))
        after = chunk.first_seq - 1
        while True:

            def next_batch(s: Session, after: int = after) -> list[Ballot]:
                stmt = select(Ballot).where(*in_chunk, Ballot.seq > after).order_by(Ballot.seq).limit(limit)
                return list(s.scalars(stmt))

            batch = self.read(next_batch)
            if not batch:
                return
            after = batch[-1].seq
            yield batch
            self.ballots_processed += len(batch)

    def stream_ballots(self, chunk: ElectionCenter, state: int | None = None) -> Iterator[Ballot]:
        """The chunk's ballots (of ``state`` only, when given) one by one, fetched in bounded batches."""
        for batch in self.ballot_batches(chunk, state):
            yield from batch

    def complete(self, write_result: WriteResult, finalize: Finalizer | None = None) -> Outcome:
        """Commit the result and the DONE state in one transaction (idempotent: safe to repeat)."""
        return in_transaction(
            self.factory,
            lambda s: transitions.complete(s, self.claim.task_id, write_result, finalize),
        )


def resolve(path: str) -> Body:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class TaskError(RuntimeError):
    """A body's exception that would not reach the driver intact, as its type's name and message."""


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives the trip to the driver, else a :class:`TaskError` saying what it was.

    Ray rebuilds a task's exception on the driver by unpickling it, which calls ``cls(*exc.args)``: a
    class whose ``__init__`` takes other arguments than its message comes back garbled or not at all
    (Ray's ``UnserializableException``), and the job's status would not say what failed. Our own
    classes rebuild themselves (``__reduce__``); this covers one that does not.
    """
    try:
        back = pickle.loads(ray.cloudpickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:  # any failure to come back is what this guards against
        pass
    return TaskError(f"{type(exc).__name__}: {exc}")


@ray.remote
def run_chunk(body_path: str, database_url: str, claim: Claim) -> str:
    """The Ray task: run one chunk task's body on a worker. Returns the Outcome's value.

    The database URL travels as a task argument without its password (``without_password``); the worker
    connects with its own ``AMARVOTE_DATABASE_URL`` when that names the same database (a cluster node
    sets it, with the password, as it sets the server secret). Key material is never an argument: bodies
    read what they need from the job's escrow themselves, with the server secret of the worker's own
    settings, which are read here once and handed to the body in its context.
    """
    started = time.perf_counter()
    settings = Settings()
    url = with_own_password(database_url, settings.database_url)
    ctx = ChunkContext(claim=claim, database_url=url, settings=settings)
    try:
        outcome = resolve(body_path)(ctx)
    except Exception as exc:
        portable = _portable(exc)
        if portable is exc:
            raise
        raise portable from exc
    finally:
        release_freed_memory()  # the worker stays; the chunk's ballots should not
    metrics.observe_chunk(claim.operation, time.perf_counter() - started, ctx.ballots_processed)
    return Outcome(outcome).value
