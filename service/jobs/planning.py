"""Job creation: the planning side of the job lifecycle (``service.jobs.transitions`` owns the state
transitions).

Each ``create_*`` function writes, in the caller's transaction, the job row, its chunk tasks and one
outbox row per task (``service.jobs.outbox``; the transactional outbox: a broker only ever sees what
committed). Messages carry ids only. A bad state raises a ``DomainError`` before anything is written;
if something fails after the first write the caller's transaction rolls everything back.

Chunk numbering (contract with the bridge): a tally plans chunks numbered 1..N, each the ballots
(cast and spoiled) with ``seq`` in ``[first_seq, last_seq]``, consecutive runs of ``chunk_size`` ballots
in ``seq`` order, so the assignment is deterministic. It also writes the row of kind ``election``,
numbered 0: the finalizer (``service.jobs.finalize``) fills its encrypted tally (the product of the
chunks') when the tally job completes. The tally job has one task per chunk.

Decryption never touches a chunk: a chunk's sub-tally stays encrypted (decrypting it would publish the
votes of that small group of voters). The first decryption request of a tally plans its *decryption
units* once, in the same transaction: ``slice`` rows, each holding at most ``slice_selections``
selections of the aggregate (so a manifest of 1,000 selections still spreads over the cluster), and
``spoiled`` rows, each a run of spoiled ballots in ``seq`` order holding about as many selections as a
slice (``spoiled_chunk_size`` ballots when set), so every decryption task costs about the same. Partial,
compensated and combine jobs have one task per decryption unit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Uuid, and_, bindparam, func, insert, literal, select, text
from sqlalchemy.orm import Session

from service.db.models import (
    ChunkKind,
    ChunkTask,
    CompensatedShare,
    DecryptionShare,
    ElectionCenter,
    ElectionJob,
    ElectionState,
    Guardian,
    JobStatus,
    OperationType,
    TaskState,
)
from service.db.session import is_postgres
from service.errors import Conflict, Invalid, NotFound
from service.jobs import outbox
from service.jobs.queries import (
    BLOCKING_STATUSES,
    LIVE_STATUSES,
    completed_tally_job,
    guardian_ids_of,
    jobs_of,
    load_election,
    units_of,
)

ELECTION_CHUNK_NUMBER = 0  # the election-level row of election_center


@dataclass(frozen=True, slots=True)
class UnitSizes:
    """How the decryption of a tally is cut into tasks (fixed when its units are first planned)."""

    slice_selections: int = 100
    spoiled_chunk_size: int | None = None  # None: about slice_selections selections of ballots a run

    @classmethod
    def from_settings(cls, settings: Any) -> UnitSizes:
        return cls(settings.decryption_slice_selections, settings.spoiled_chunk_size)

    def spoiled_per_run(self, selections_per_ballot: int) -> int:
        if self.spoiled_chunk_size is not None:
            return self.spoiled_chunk_size
        return max(1, self.slice_selections // max(selections_per_ballot, 1))


@dataclass(frozen=True, slots=True)
class PlannedChunk:
    chunk_number: int
    first_seq: int
    last_seq: int
    ballot_count: int


# ---------------------------------------------------------------------------------------------- units

_PLAN_SPOILED = """
INSERT INTO election_center (election_id, tally_job_id, chunk_number, kind, first_seq, last_seq, ballot_count)
SELECT :election_id, :job_id, (rn - 1) / :size + 1, :kind, MIN(seq), MAX(seq), COUNT(*)
FROM (
    SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rn FROM ballot
    WHERE election_id = :election_id AND state = :spoiled AND seq BETWEEN :first AND :last
) numbered
GROUP BY (rn - 1) / :size
"""


def ensure_decryption_units(session: Session, tally: ElectionJob, sizes: UnitSizes) -> int:
    """Plan the tally's decryption units once (the caller holds the election's row lock); their count.

    Slices come from the aggregate's selections (``compute.tally.slices``, a fixed order); spoiled runs
    are computed in the database from the (election_id, seq) index, no ballot comes to Python.
    """
    from compute.tally import CiphertextTally, selection_keys, slice_tally, slices

    planned = session.scalar(select(func.count()).select_from(ElectionCenter).where(units_of(tally.job_id)))
    if planned:
        return int(planned)
    whole = session.scalars(
        select(ElectionCenter).where(
            ElectionCenter.tally_job_id == tally.job_id, ElectionCenter.kind == ChunkKind.ELECTION.value
        )
    ).one_or_none()
    if whole is None or whole.encrypted_tally is None:
        raise Conflict(f"tally job {tally.job_id} has no aggregate encrypted tally")
    aggregate = CiphertextTally.from_json(whole.encrypted_tally)
    for number, keys in enumerate(slices(aggregate, sizes.slice_selections), 1):
        session.add(
            ElectionCenter(
                election_id=tally.election_id,
                tally_job_id=tally.job_id,
                chunk_number=number,
                kind=ChunkKind.SLICE.value,
                ballot_count=0,
                encrypted_tally=slice_tally(aggregate, keys).to_json(),
            )
        )
    session.flush()
    session.execute(
        text(_PLAN_SPOILED).bindparams(bindparam("job_id", type_=Uuid())),
        {
            "election_id": tally.election_id,
            "job_id": tally.job_id,
            # A ballot holds at most the aggregate's selections (placeholders aside): a bound, not a count.
            "size": sizes.spoiled_per_run(len(selection_keys(aggregate))),
            "kind": ChunkKind.SPOILED.value,
            "spoiled": 2,  # BallotState.SPOILED
            "first": whole.first_seq,
            "last": whole.last_seq,
        },
    )
    return int(
        session.scalar(select(func.count()).select_from(ElectionCenter).where(units_of(tally.job_id))) or 0
    )


def _new_job(
    session: Session,
    election_id: int,
    operation: OperationType,
    over: ColumnElement[bool],
    created_by: str | None,
    *,
    guardian_id: str | None = None,
    missing_guardian_id: str | None = None,
    parent_job_id: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
) -> ElectionJob:
    """A job with one PENDING task per ``election_center`` row matching ``over`` (for a decryption or a
    combine, the tally's decryption units: ``units_of``) and one outbox message per task."""
    job = ElectionJob(
        job_id=uuid.uuid4(),
        election_id=election_id,
        operation_type=operation.value,
        status=JobStatus.QUEUED.value,
        total_chunks=0,
        processed_chunks=0,
        failed_chunks=0,
        parent_job_id=parent_job_id,
        guardian_id=guardian_id,
        missing_guardian_id=missing_guardian_id,
        created_by=created_by,
        metadata_=metadata or {},
    )
    session.add(job)
    session.flush()  # the tasks' foreign keys need the job row
    job.total_chunks = _add_tasks(session, job, over)
    return job


def _add_tasks(session: Session, job: ElectionJob, chunks: ColumnElement[bool]) -> int:
    """One PENDING task per ``election_center`` row matching ``chunks`` and one outbox message per task.

    Set-based (INSERT ... SELECT in the database): the cost does not grow with Python round trips,
    so a job of 100,000 chunks is created as fast as the database writes rows.
    """
    job_id = literal(job.job_id, Uuid())
    session.execute(
        insert(ChunkTask).from_select(
            ["job_id", "chunk_id", "state", "attempts"],
            select(job_id, ElectionCenter.id, literal(TaskState.PENDING.value), literal(0))
            .where(chunks)
            .order_by(ElectionCenter.kind, ElectionCenter.chunk_number),
        )
    )
    outbox.enqueue_job_tasks(session, job)
    # Counted, not taken from rowcount: drivers report -1 for INSERT ... SELECT through the ORM.
    tasks = session.scalar(select(func.count()).select_from(ChunkTask).where(ChunkTask.job_id == job.job_id))
    return int(tasks or 0)


# ---------------------------------------------------------------------------------------------- tally

# Chunk boundaries. PostgreSQL: a recursive walk down the (election_id, seq) index, each step reading
# the next ``size`` entries with LIMIT: about 4x faster than numbering every row with a window
# function (18 ms against 71 ms for 100,000 ballots here). SQLite has no LATERAL: the window form.
_PLAN_POSTGRES = """
WITH RECURSIVE bounds(chunk_number, first_seq, last_seq, n) AS (
    SELECT 1, x.first_seq, x.last_seq, x.n FROM LATERAL (
        SELECT MIN(seq) AS first_seq, MAX(seq) AS last_seq, COUNT(*) AS n FROM (
            SELECT seq FROM ballot WHERE election_id = :election_id ORDER BY seq LIMIT :size
        ) s
    ) x
    UNION ALL
    SELECT b.chunk_number + 1, x.first_seq, x.last_seq, x.n FROM bounds b, LATERAL (
        SELECT MIN(seq) AS first_seq, MAX(seq) AS last_seq, COUNT(*) AS n FROM (
            SELECT seq FROM ballot WHERE election_id = :election_id AND seq > b.last_seq
            ORDER BY seq LIMIT :size
        ) s
    ) x
    WHERE b.n = :size
)
"""
_PLAN_WINDOW = """
WITH bounds(chunk_number, first_seq, last_seq, n) AS (
    SELECT (rn - 1) / :size + 1, MIN(seq), MAX(seq), COUNT(*)
    FROM (
        SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS rn FROM ballot WHERE election_id = :election_id
    ) numbered
    GROUP BY (rn - 1) / :size
)
"""


def _plan_cte(session: Session) -> str:
    return _PLAN_POSTGRES if is_postgres(session) else _PLAN_WINDOW


def plan_ballot_chunks(session: Session, election_id: int, chunk_size: int) -> list[PlannedChunk]:
    """Consecutive runs of ``chunk_size`` ballots in seq order (cast and spoiled alike), computed in
    the database. Reads only (election_id, seq) through the ``ix_ballot_election_seq`` index."""
    rows = session.execute(
        text(
            _plan_cte(session)
            + "SELECT chunk_number, first_seq, last_seq, n FROM bounds WHERE n > 0 ORDER BY chunk_number"
        ),
        {"size": chunk_size, "election_id": election_id},
    ).all()
    return [PlannedChunk(int(r.chunk_number), int(r.first_seq), int(r.last_seq), int(r.n)) for r in rows]


def create_tally_job(
    session: Session, election_id: int, chunk_size: int, created_by: str | None = None
) -> ElectionJob:
    """Plan the chunks of a CLOSED election and create its tally job (one task per chunk)."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise Invalid(f"chunk_size must be a positive integer, got {chunk_size!r}")
    election = load_election(session, election_id, lock=True)
    if election.state != ElectionState.CLOSED.value:
        raise Conflict(f"election {election_id} is {election.state}: only a closed election is tallied")
    existing = jobs_of(session, election_id, OperationType.TALLY)
    if existing:
        # election_center holds one set of chunks per election; a failed tally is re-driven, not re-planned.
        j = existing[-1]
        hint = (
            f": re-drive it with POST /api/jobs/{j.job_id}/redrive"
            if j.status == JobStatus.FAILED.value
            else ""
        )
        raise Conflict(f"election {election_id} already has a tally job {j.job_id} ({j.status}){hint}")

    job = ElectionJob(
        job_id=uuid.uuid4(),
        election_id=election_id,
        operation_type=OperationType.TALLY.value,
        status=JobStatus.QUEUED.value,
        total_chunks=0,
        processed_chunks=0,
        failed_chunks=0,
        created_by=created_by,
    )
    session.add(job)
    session.flush()
    # The chunk rows straight from the plan, in the database: no ballot (nor seq) comes to Python.
    session.execute(
        text(
            _plan_cte(session)
            + """
            INSERT INTO election_center (election_id, tally_job_id, chunk_number, kind, first_seq, last_seq,
                                         ballot_count)
            SELECT :election_id, :job_id, chunk_number, :kind, first_seq, last_seq, n
            FROM bounds WHERE n > 0
            """
        ).bindparams(bindparam("job_id", type_=Uuid())),
        {"size": chunk_size, "election_id": election_id, "job_id": job.job_id, "kind": ChunkKind.CHUNK.value},
    )
    chunks, ballots, first, last = session.execute(
        select(
            func.count(),
            func.sum(ElectionCenter.ballot_count),
            func.min(ElectionCenter.first_seq),
            func.max(ElectionCenter.last_seq),
        ).where(ElectionCenter.tally_job_id == job.job_id)
    ).one()
    if not chunks:
        raise Conflict(f"election {election_id} has no ballots to tally")  # rolls back the job row
    whole = ElectionCenter(
        election_id=election_id,
        tally_job_id=job.job_id,
        chunk_number=ELECTION_CHUNK_NUMBER,
        kind=ChunkKind.ELECTION.value,
        first_seq=first,
        last_seq=last,
        ballot_count=int(ballots),
    )
    session.add(whole)
    session.flush()
    job.total_chunks = _add_tasks(
        session,
        job,
        and_(ElectionCenter.tally_job_id == job.job_id, ElectionCenter.kind == ChunkKind.CHUNK.value),
    )
    job.metadata_ = {"chunk_size": chunk_size, "ballot_count": int(ballots), "election_chunk_id": whole.id}
    session.flush()
    return job


# ---------------------------------------------------------------------------------------------- decryption


def _require_guardian(session: Session, election_id: int, guardian_id: str) -> Guardian:
    g = session.get(Guardian, (election_id, guardian_id))
    if g is None:
        raise NotFound(f"guardian {guardian_id!r} is not a guardian of election {election_id}")
    return g


def create_partial_decryption_job(
    session: Session,
    election_id: int,
    guardian_id: str,
    created_by: str | None = None,
    sizes: UnitSizes | None = None,
    metadata: dict[str, Any] | None = None,
) -> ElectionJob:
    """A guardian's share of every decryption unit (the aggregate's slices and the spoiled ballots).
    The caller escrows the guardian's key for the job (``service.elections.escrow``), or, for shares the
    guardian uploaded (``metadata`` {"shares": "uploaded"}), staged them (``service.elections.uploads``)."""
    election = load_election(session, election_id, lock=True)
    _require_guardian(session, election_id, guardian_id)
    tally = completed_tally_job(session, election)
    if dup := jobs_of(
        session, election_id, OperationType.PARTIAL_DECRYPTION, BLOCKING_STATUSES, guardian_id=guardian_id
    ):
        raise Conflict(
            f"guardian {guardian_id!r} already has a partial decryption job"
            f" {dup[-1].job_id} ({dup[-1].status})"
        )
    ensure_decryption_units(session, tally, sizes or UnitSizes())
    return _new_job(
        session,
        election_id,
        OperationType.PARTIAL_DECRYPTION,
        units_of(tally.job_id),
        created_by,
        guardian_id=guardian_id,
        metadata={"tally_job_id": str(tally.job_id), **(metadata or {})},
    )


def create_compensated_decryption_jobs(
    session: Session,
    parent_job_id: uuid.UUID,
    missing_guardian_ids: Sequence[str],
    created_by: str | None = None,
    sizes: UnitSizes | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[ElectionJob]:
    """Children of a guardian's partial job: for each missing guardian, one job with one task per
    decryption unit (so one message per source guardian, missing guardian and unit). The caller escrows,
    for each, only the backup coordinate of that missing guardian. Published at once: the shares do not
    depend on the parent's."""
    parent = session.get(ElectionJob, parent_job_id)
    if parent is None or parent.operation_type != OperationType.PARTIAL_DECRYPTION.value:
        raise NotFound(f"partial decryption job {parent_job_id} does not exist")
    if parent.status == JobStatus.FAILED.value:
        raise Conflict(f"partial decryption job {parent_job_id} FAILED: re-drive it first")
    election = load_election(session, parent.election_id, lock=True)
    source = parent.guardian_id or ""
    missing = list(dict.fromkeys(missing_guardian_ids))
    if not missing:
        raise Invalid("no missing guardians named")
    if len(missing) != len(missing_guardian_ids):
        raise Invalid("a missing guardian is named twice")
    if source in missing:
        raise Invalid(f"guardian {source!r} cannot compensate for itself")
    spare = election.number_of_guardians - election.quorum
    if len(missing) > spare:
        raise Conflict(
            f"{len(missing)} guardians missing but a quorum of {election.quorum} of "
            f"{election.number_of_guardians} tolerates at most {spare}"
        )
    for m in missing:
        _require_guardian(session, election.id, m)
        if present := jobs_of(
            session, election.id, OperationType.PARTIAL_DECRYPTION, BLOCKING_STATUSES, guardian_id=m
        ):
            raise Conflict(
                f"guardian {m!r} is not missing: its partial decryption job {present[-1].job_id} exists"
            )
        if dup := jobs_of(
            session,
            election.id,
            OperationType.COMPENSATED_DECRYPTION,
            BLOCKING_STATUSES,
            guardian_id=source,
            missing_guardian_id=m,
        ):
            raise Conflict(
                f"guardian {source!r} already compensates for {m!r}"
                f" in job {dup[-1].job_id} ({dup[-1].status})"
            )
    tally = completed_tally_job(session, election)
    ensure_decryption_units(session, tally, sizes or UnitSizes())
    return [
        _new_job(
            session,
            election.id,
            OperationType.COMPENSATED_DECRYPTION,
            units_of(tally.job_id),
            created_by,
            guardian_id=source,
            missing_guardian_id=m,
            parent_job_id=parent.job_id,
            metadata={"tally_job_id": str(tally.job_id), **(metadata or {})},
        )
        for m in missing
    ]


# ---------------------------------------------------------------------------------------------- combine


def _share_counts(
    session: Session, tally_job_id: uuid.UUID
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Shares per guardian (and per available→missing pair) over the decryption units of this tally."""
    rows = select(ElectionCenter.id).where(units_of(tally_job_id))
    direct = {
        g: n
        for g, n in session.execute(
            select(DecryptionShare.guardian_id, func.count())
            .where(DecryptionShare.chunk_id.in_(rows))
            .group_by(DecryptionShare.guardian_id)
        )
    }
    compensated = {
        (a, m): n
        for a, m, n in session.execute(
            select(CompensatedShare.guardian_id, CompensatedShare.missing_guardian_id, func.count())
            .where(CompensatedShare.chunk_id.in_(rows))
            .group_by(CompensatedShare.guardian_id, CompensatedShare.missing_guardian_id)
        )
    }
    return direct, compensated


def create_combine_job(session: Session, election_id: int, created_by: str | None = None) -> ElectionJob:
    """Combine the shares of each decryption unit once a quorum has decrypted every unit and every
    available guardian has compensated for every missing one."""
    election = load_election(session, election_id, lock=True)
    tally = completed_tally_job(session, election)
    if dup := jobs_of(session, election_id, OperationType.COMBINE_DECRYPTION, BLOCKING_STATUSES):
        raise Conflict(
            f"election {election_id} already has a combine job {dup[-1].job_id} ({dup[-1].status})"
        )
    for op in (OperationType.PARTIAL_DECRYPTION, OperationType.COMPENSATED_DECRYPTION):
        if live := jobs_of(session, election_id, op, LIVE_STATUSES):
            raise Conflict(f"decryption job {live[0].job_id} ({op.value}) is still {live[0].status}")

    guardians = guardian_ids_of(session, election_id)
    direct, compensated = _share_counts(session, tally.job_id)
    needed = session.scalar(select(func.count()).select_from(ElectionCenter).where(units_of(tally.job_id)))
    available = [g for g in guardians if needed and direct.get(g, 0) == needed]
    if len(available) < election.quorum:
        raise Conflict(
            f"quorum not met: {len(available)} of the {election.quorum} guardians needed have decrypted"
            f" the whole tally ({', '.join(available) or 'none'})"
        )
    missing = [g for g in guardians if g not in available]
    lacking = [f"{a}→{m}" for m in missing for a in available if compensated.get((a, m), 0) != needed]
    if lacking:
        raise Conflict(
            "compensated shares incomplete for (available→missing guardian): " + ", ".join(lacking)
        )
    return _new_job(
        session,
        election_id,
        OperationType.COMBINE_DECRYPTION,
        units_of(tally.job_id),
        created_by,
        metadata={
            "tally_job_id": str(tally.job_id),
            "available_guardian_ids": available,
            "missing_guardian_ids": missing,
        },
    )


# ---------------------------------------------------------------------------------------------- verify


def create_verify_job(session: Session, election_id: int, created_by: str | None = None) -> ElectionJob:
    """Verify a DECRYPTED election's record from the database: one task per ballot chunk of its completed
    tally (kind ``chunk``, 1..N: the proofs, clones' fingerprint prefixes, the cast product and the
    spoiled ballots' decryptions of its ballots) and one on the election row (number 0: the guardians,
    the context and the tally's shares); the finalizer (``service.jobs.verification``) adds the reports
    up and stores the verdict on the job. A completed verify job does not block another (verifying again
    is always allowed); a live one does."""
    election = load_election(session, election_id, lock=True)
    if election.state != ElectionState.DECRYPTED.value:
        raise Conflict(f"election {election_id} is {election.state}: only a decrypted election is verified")
    tally = completed_tally_job(session, election)
    if live := jobs_of(session, election_id, OperationType.VERIFY, LIVE_STATUSES):
        raise Conflict(
            f"election {election_id} already has a verify job {live[-1].job_id} ({live[-1].status})"
        )
    ballots_and_header = and_(
        ElectionCenter.tally_job_id == tally.job_id,
        ElectionCenter.kind.in_([ChunkKind.CHUNK.value, ChunkKind.ELECTION.value]),
    )
    return _new_job(
        session,
        election_id,
        OperationType.VERIFY,
        ballots_and_header,
        created_by,
        metadata={"tally_job_id": str(tally.job_id)},
    )
