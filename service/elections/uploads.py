"""Guardian-held decryption: shares computed on the guardians' own machines, uploaded and checked here.

In this mode no guardian hands its key (or credential file, or passphrase) to the service. The flow:

1. After the tally the admin declares the missing guardians once (``declare_missing``: at most
   n - quorum; refused once any share, staged upload or decryption job exists). A guardian declared
   missing that turns up later (an upload here, or a custodial ``POST /api/decryption/create``) is
   refused 409 naming it.
2. Each available guardian reads what it decrypts: the decryption units (``list_units``, planned once
   with ``planning.ensure_decryption_units``; ``unit_targets``: a slice's ciphertexts or a spoiled run's
   ballots, as ``compute.decryption_target.Target`` JSON), the declared missing guardians, the cast
   ballots' selection ciphertexts a page at a time (``cast_ciphertexts``: to recompute the aggregate and
   look for repeats before decrypting) and the spoiled ballots (``spoiled_ballots``).
3. It uploads one unit at a time (``stage_unit``): its own share of the unit and one compensated share
   per declared missing guardian, the very documents ``bridge/tasks/decryption.py`` writes. The
   structure is checked at once (a share of another unit, of selections or ballots the unit does not
   hold, another guardian's: 422, nothing staged); the documents wait in ``share_upload``.
4. Once every unit is staged it submits (``submit``): one PARTIAL_DECRYPTION job and one
   COMPENSATED_DECRYPTION job per missing guardian, one task per unit, on the usual queues, flagged
   ``metadata.shares = "uploaded"`` so the executor runs ``bridge/tasks/share_check.py``: it checks every
   Chaum-Pedersen proof of its unit's staged document against the guardian's public key (or the
   recovery key the missing guardian's commitments give) and writes the ``decryption_share`` /
   ``compensated_share`` row where the escrow bodies write theirs, erasing the staging row, in the
   transaction that marks the task DONE. A bad proof is a permanent failure (FAILED at the first
   attempt, no retries), naming guardian, unit, contest and selection; nothing is written.
5. Re-upload: a unit whose check FAILED is uploaded again with ``stage_unit``, which replaces the staged
   document and re-drives exactly that failed task (its job IN_PROGRESS again), which reads the new one.

Why one request per unit: a unit is bounded by ``decryption_slice_selections`` selections (or as many
spoiled ballots' selections), so one upload stays far under ``AMARVOTE_MAX_BODY_BYTES`` (a share with
its proof is about 3.3 KB a selection in JSON, a compensated one 4.4 KB: a 100-selection unit with two
missing guardians about 1.2 MB), whatever the manifest or the number of spoiled ballots, while a whole
set grows with both (a 1,000-selection manifest and 1,000 spoiled ballots pass 16 MiB).

This module owns ``share_upload`` and ``election.missing_guardian_ids``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.orm import Session

from service.db.models import (
    Ballot,
    BallotState,
    ChunkKind,
    ChunkTask,
    CompensatedShare,
    DecryptionShare,
    Election,
    ElectionCenter,
    ElectionJob,
    Guardian,
    OperationType,
    ShareUpload,
    TaskState,
)
from service.errors import Conflict, Invalid, NotFound
from service.jobs import planning, queries, transitions
from service.jobs.callbacks import JobOptions
from service.jobs.transitions import UPLOADED_SHARES

OWN_SHARE = ""  # share_upload.missing_guardian_id of a guardian's own share
MAX_PAGE = 1000
ELEMENT_BYTES = 512  # an element mod p (4096 bits), big-endian


# ---------------------------------------------------------------------------------------------- reads


def _tally(session: Session, election_id: int, *, lock: bool = False) -> tuple[Election, ElectionJob]:
    election = queries.load_election(session, election_id, lock=lock)
    return election, queries.completed_tally_job(session, election)


def _units(session: Session, tally: ElectionJob) -> list[ElectionCenter]:
    return list(
        session.scalars(
            select(ElectionCenter)
            .where(queries.units_of(tally.job_id))
            .order_by(ElectionCenter.kind, ElectionCenter.chunk_number)
        )
    )


def _plan(session: Session, election_id: int, sizes: planning.UnitSizes) -> ElectionJob:
    """The tally's decryption units, planned once (under the election's lock) if they are not yet."""
    _election, tally = _tally(session, election_id)
    if not session.scalar(
        select(func.count()).select_from(ElectionCenter).where(queries.units_of(tally.job_id))
    ):
        _election, tally = _tally(session, election_id, lock=True)
        planning.ensure_decryption_units(session, tally, sizes)
    return tally


def _unit_doc(u: ElectionCenter) -> dict[str, Any]:
    doc: dict[str, Any] = {"unit_id": u.id, "kind": u.kind, "number": u.chunk_number}
    if u.kind == ChunkKind.SLICE.value:
        contests = (u.encrypted_tally or {}).get("contests") or {}
        doc["selections"] = sum(len(c.get("selections") or {}) for c in contests.values())
    else:
        doc["ballots"] = u.ballot_count
    return doc


def list_units(session: Session, election_id: int, sizes: planning.UnitSizes) -> dict[str, Any]:
    """The tally's decryption units (planned on first use), and the declared missing guardians."""
    tally = _plan(session, election_id, sizes)
    election = queries.load_election(session, election_id)
    return {
        "election_id": election_id,
        "tally_job_id": str(tally.job_id),
        "missing_guardian_ids": list(election.missing_guardian_ids or []),
        "units": [_unit_doc(u) for u in _units(session, tally)],
    }


def _unit(session: Session, election_id: int, unit_id: int) -> ElectionCenter:
    _election, tally = _tally(session, election_id)
    unit = session.get(ElectionCenter, unit_id)
    if (
        unit is None
        or unit.election_id != election_id
        or unit.tally_job_id != tally.job_id
        or unit.kind not in (ChunkKind.SLICE.value, ChunkKind.SPOILED.value)
    ):
        raise NotFound(f"unit {unit_id} is not a decryption unit of election {election_id}")
    return unit


def targets_of_unit(session: Session, unit: ElectionCenter) -> list[Any]:
    """The unit's targets (``compute.decryption_target.Target``): its slice, or its spoiled ballots."""
    from compute.decryption_target import target_of
    from compute.tally import CiphertextTally
    from service.elections.crypto import decode

    if unit.kind == ChunkKind.SLICE.value:
        return [target_of(CiphertextTally.from_json(unit.encrypted_tally or {}))]
    rows = session.scalars(
        select(Ballot.payload)
        .where(
            Ballot.election_id == unit.election_id,
            Ballot.seq >= unit.first_seq,
            Ballot.seq <= unit.last_seq,
            Ballot.state == int(BallotState.SPOILED),
        )
        .order_by(Ballot.seq)
    )
    targets = [target_of(decode(p)) for p in rows]
    if len(targets) != unit.ballot_count:
        raise Conflict(
            f"spoiled {unit.chunk_number}: {len(targets)} ballots found, {unit.ballot_count} planned"
        )
    return targets


def unit_targets(session: Session, election_id: int, unit_id: int) -> dict[str, Any]:
    """What a guardian decrypts for one unit: its targets as ``Target`` JSON (a slice: one, the
    aggregate's selections it holds; a spoiled run: one per ballot, placeholders included)."""
    unit = _unit(session, election_id, unit_id)
    return {**_unit_doc(unit), "targets": [t.to_json() for t in targets_of_unit(session, unit)]}


def missing_guardians(session: Session, election_id: int) -> dict[str, Any]:
    election = queries.load_election(session, election_id)
    return {
        "election_id": election_id,
        "declared": election.missing_guardian_ids is not None,
        "guardian_ids": list(election.missing_guardian_ids or []),
    }


def _packed(ct: Any) -> str:
    """A ciphertext as base64 of pad || data, each 512 bytes big-endian (1,368 characters)."""
    raw = int(ct.pad).to_bytes(ELEMENT_BYTES, "big") + int(ct.data).to_bytes(ELEMENT_BYTES, "big")
    return base64.b64encode(raw).decode()


def _page(
    session: Session, election_id: int, state: BallotState, after: int, limit: int
) -> list[tuple[int, str, bytes | None]]:
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit must be 1 to {MAX_PAGE}")
    queries.load_election(session, election_id)
    columns: tuple[Any, ...] = (Ballot.seq, Ballot.object_id)
    if state == BallotState.CAST:
        columns = (*columns, Ballot.payload)
    rows = session.execute(
        select(*columns)
        .where(Ballot.election_id == election_id, Ballot.state == int(state), Ballot.seq > after)
        .order_by(Ballot.seq)
        .limit(limit)
    ).all()
    return [(r[0], r[1], r[2] if len(r) > 2 else None) for r in rows]


def cast_ciphertexts(session: Session, election_id: int, after: int = 0, limit: int = 500) -> dict[str, Any]:
    """The cast ballots after ``seq`` ``after`` (at most ``limit``, in seq order), each with every
    selection ciphertext as ``[contest id, selection id, base64(pad || data), placeholder]``; spoiled
    ballots are not in it. ``next_after`` is the seq to ask from next (null: no more)."""
    from service.elections.crypto import decode

    rows = _page(session, election_id, BallotState.CAST, after, limit)
    ballots = []
    for seq, object_id, payload in rows:
        assert payload is not None
        b = decode(payload)
        ballots.append(
            {
                "seq": seq,
                "object_id": object_id,
                "selections": [
                    [c.object_id, s.object_id, _packed(s.ciphertext), bool(s.is_placeholder_selection)]
                    for c in b.contests
                    for s in c.ballot_selections
                ],
            }
        )
    return {
        "election_id": election_id,
        "ballots": ballots,
        "next_after": rows[-1][0] if len(rows) == limit else None,
    }


def spoiled_ballots(session: Session, election_id: int, after: int = 0, limit: int = 500) -> dict[str, Any]:
    """The spoiled ballots' ids after ``seq`` ``after``, in seq order (``next_after`` as above)."""
    rows = _page(session, election_id, BallotState.SPOILED, after, limit)
    return {
        "election_id": election_id,
        "ballots": [{"seq": seq, "object_id": oid} for seq, oid, _ in rows],
        "next_after": rows[-1][0] if len(rows) == limit else None,
    }


# ---------------------------------------------------------------------------------------------- missing


def _decryption_started(session: Session, election_id: int, tally: ElectionJob) -> str | None:
    """What already exists of this tally's decryption: a reason, or None."""
    units = select(ElectionCenter.id).where(queries.units_of(tally.job_id))
    if session.scalar(select(exists().where(DecryptionShare.chunk_id.in_(units)))):
        return "decryption shares exist"
    if session.scalar(select(exists().where(CompensatedShare.chunk_id.in_(units)))):
        return "compensated shares exist"
    if session.scalar(select(exists().where(ShareUpload.election_id == election_id))):
        return "shares were uploaded"
    for op in (OperationType.PARTIAL_DECRYPTION, OperationType.COMPENSATED_DECRYPTION):
        if jobs := queries.jobs_of(session, election_id, op, queries.LIVE_STATUSES):
            return f"decryption job {jobs[0].job_id} is {jobs[0].status}"
    return None


def declare_missing(
    session: Session, election_id: int, guardian_ids: Sequence[str], sizes: planning.UnitSizes
) -> dict[str, Any]:
    """The admin's one declaration of the missing guardians, after the tally and before any share."""
    election, tally = _tally(session, election_id, lock=True)
    ids = list(guardian_ids)
    if len(set(ids)) != len(ids):
        raise Invalid("a missing guardian is named twice")
    spare = election.number_of_guardians - election.quorum
    if len(ids) > spare:
        raise Conflict(
            f"{len(ids)} guardians missing but a quorum of {election.quorum} of"
            f" {election.number_of_guardians} tolerates at most {spare}"
        )
    for g in ids:
        if session.get(Guardian, (election_id, g)) is None:
            raise NotFound(f"guardian {g!r} is not a guardian of election {election_id}")
    if started := _decryption_started(session, election_id, tally):
        raise Conflict(f"the missing guardians of election {election_id} can no longer change: {started}")
    planning.ensure_decryption_units(session, tally, sizes)
    election.missing_guardian_ids = ids
    session.flush()
    return missing_guardians(session, election_id)


def _not_missing(election: Election, guardian_id: str) -> None:
    if guardian_id in (election.missing_guardian_ids or []):
        raise Conflict(
            f"guardian {guardian_id!r} was declared missing for election {election.id}: its share is"
            " reconstructed from the others' compensated shares"
        )


# ---------------------------------------------------------------------------------------------- uploads


def _record(session: Session, election_id: int, guardian_id: str) -> Any:
    from compute.guardian import GuardianRecord

    g = session.get(Guardian, (election_id, guardian_id))
    if g is None:
        raise NotFound(f"guardian {guardian_id!r} is not a guardian of election {election_id}")
    return GuardianRecord.from_json(g.public_record)


def _uploaded_jobs(session: Session, election_id: int, guardian_id: str) -> list[ElectionJob]:
    """The guardian's partial and compensated jobs of uploaded shares, oldest first."""
    return [
        j
        for op in (OperationType.PARTIAL_DECRYPTION, OperationType.COMPENSATED_DECRYPTION)
        for j in queries.jobs_of(session, election_id, op, guardian_id=guardian_id)
        if (j.metadata_ or {}).get("shares") == UPLOADED_SHARES
    ]


def _custodial(session: Session, election_id: int, guardian_id: str) -> ElectionJob | None:
    for j in queries.jobs_of(
        session,
        election_id,
        OperationType.PARTIAL_DECRYPTION,
        queries.BLOCKING_STATUSES,
        guardian_id=guardian_id,
    ):
        if (j.metadata_ or {}).get("shares") != UPLOADED_SHARES:
            return j
    return None


def unit_label(unit: ElectionCenter) -> str:
    return f"{unit.kind} {unit.chunk_number} (unit {unit.id})"


@dataclass(slots=True)
class Staged:
    unit_id: int
    guardian_id: str
    staged: list[str] = field(default_factory=list)  # "share" and/or missing guardian ids
    already_accepted: list[str] = field(default_factory=list)
    redriven: list[str] = field(default_factory=list)  # job ids whose failed task was re-driven

    def to_json(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "guardian_id": self.guardian_id,
            "staged": self.staged,
            "alreadyAccepted": self.already_accepted,
            "redrivenJobs": self.redriven,
        }


def stage_unit(
    session: Session,
    election_id: int,
    guardian_id: str,
    unit_id: int,
    share: dict[str, Any],
    compensated: dict[str, dict[str, Any]],
) -> Staged:
    """Stage one unit's documents of one guardian (structure checked now, proofs by the unit's task).

    Refused: a guardian declared missing (409), a guardian decrypting with an escrowed key (409), a
    unit whose check is queued or running (409), compensated shares for other guardians than the
    declared missing ones, or a document that is not exactly the unit's (422, naming what). A document
    whose task is DONE is left alone (``alreadyAccepted``); one whose task FAILED is replaced and that
    task re-driven at once (``redrivenJobs``).
    """
    from compute.uploaded_shares import read_unit_share

    election = queries.load_election(session, election_id, lock=True)
    queries.completed_tally_job(session, election)
    _not_missing(election, guardian_id)
    guardian = _record(session, election_id, guardian_id)
    if custodial := _custodial(session, election_id, guardian_id):
        raise Conflict(
            f"guardian {guardian_id!r} already decrypts with its escrowed key in job {custodial.job_id}"
            f" ({custodial.status})"
        )
    unit = _unit(session, election_id, unit_id)
    declared = list(election.missing_guardian_ids or [])
    if set(compensated) != set(declared):
        raise Invalid(
            f"compensated shares are for {sorted(compensated) or 'no guardian'}; the declared missing"
            f" guardians of election {election_id} are {declared or 'none'}"
        )

    # The state of this unit's task in each of the guardian's upload jobs, by document.
    states: dict[str, tuple[ElectionJob, str]] = {}
    for job in _uploaded_jobs(session, election_id, guardian_id):
        state = session.scalar(
            select(ChunkTask.state).where(ChunkTask.job_id == job.job_id, ChunkTask.chunk_id == unit.id)
        )
        if state is not None:
            key = (
                OWN_SHARE
                if job.operation_type == OperationType.PARTIAL_DECRYPTION.value
                else job.missing_guardian_id
            )
            states[key or OWN_SHARE] = (job, state)
    busy = [
        k or "share"
        for k, (_, st) in states.items()
        if st in (TaskState.PENDING.value, TaskState.RUNNING.value)
    ]
    if busy:
        raise Conflict(
            f"{unit_label(unit)}: the upload of {guardian_id!r} is being checked ({', '.join(busy)})"
        )

    targets = targets_of_unit(session, unit)
    spoiled = unit.kind == ChunkKind.SPOILED.value
    docs: list[tuple[str, Any]] = [(OWN_SHARE, share), *((m, compensated[m]) for m in declared)]
    out = Staged(unit.id, guardian_id)
    problems: list[str] = []
    checked: list[tuple[str, dict[str, Any]]] = []
    for missing_id, doc in docs:
        name = missing_id or "share"
        if missing_id in states and states[missing_id][1] == TaskState.DONE.value:
            out.already_accepted.append(name)
            continue
        read = read_unit_share(
            doc,
            targets,
            spoiled=spoiled,
            unit_label=unit_label(unit),
            guardian=guardian,
            missing=_record(session, election_id, missing_id) if missing_id else None,
        )
        if read.problems or read.document is None:
            problems += read.problems
        else:
            checked.append((missing_id, read.document))
    if problems:
        raise Invalid(
            "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else "")
        )
    for missing_id, document in checked:
        session.execute(
            delete(ShareUpload).where(
                ShareUpload.chunk_id == unit.id,
                ShareUpload.guardian_id == guardian_id,
                ShareUpload.missing_guardian_id == missing_id,
            )
        )
        session.add(
            ShareUpload(
                chunk_id=unit.id,
                guardian_id=guardian_id,
                missing_guardian_id=missing_id,
                election_id=election_id,
                share=document,
            )
        )
        out.staged.append(missing_id or "share")
    session.flush()
    for missing_id, _doc in checked:
        if missing_id in states and states[missing_id][1] == TaskState.FAILED.value:
            job = states[missing_id][0]
            if transitions.redrive_failed(session, job.job_id, [unit.id]):
                out.redriven.append(str(job.job_id))
    return out


@dataclass(slots=True)
class Submitted:
    partial_job: ElectionJob
    compensated_jobs: list[ElectionJob]


def submit(
    session: Session,
    election_id: int,
    guardian_id: str,
    created_by: str | None = None,
    sizes: planning.UnitSizes | None = None,
    options: JobOptions | None = None,
) -> Submitted:
    """The guardian's staged upload becomes its jobs: a PARTIAL_DECRYPTION job and one
    COMPENSATED_DECRYPTION job per declared missing guardian, one task per unit, checking the staged
    documents. Refused unless every unit holds every document (422 naming the first units lacking one)."""
    election, tally = _tally(session, election_id, lock=True)
    _not_missing(election, guardian_id)
    _record(session, election_id, guardian_id)
    if custodial := _custodial(session, election_id, guardian_id):
        raise Conflict(
            f"guardian {guardian_id!r} already decrypts with its escrowed key in job {custodial.job_id}"
            f" ({custodial.status})"
        )
    if previous := [
        j
        for j in _uploaded_jobs(session, election_id, guardian_id)
        if j.operation_type == OperationType.PARTIAL_DECRYPTION.value
    ]:
        j = previous[-1]
        raise Conflict(
            f"guardian {guardian_id!r} already submitted its shares: job {j.job_id} ({j.status}); a unit"
            " whose check failed is uploaded again with PUT .../shares/{unit_id}, which re-drives it"
        )
    planning.ensure_decryption_units(session, tally, sizes or planning.UnitSizes())
    declared = list(election.missing_guardian_ids or [])
    wanted = [OWN_SHARE, *declared]
    staged = {
        (c, m)
        for c, m in session.execute(
            select(ShareUpload.chunk_id, ShareUpload.missing_guardian_id).where(
                ShareUpload.election_id == election_id, ShareUpload.guardian_id == guardian_id
            )
        )
    }
    lacking = [
        f"{unit_label(u)}: {m or 'share'}"
        for u in _units(session, tally)
        for m in wanted
        if (u.id, m) not in staged
    ]
    if lacking:
        raise Invalid(
            f"guardian {guardian_id!r} has not uploaded every unit: "
            + ", ".join(lacking[:10])
            + (f" (+{len(lacking) - 10} more)" if len(lacking) > 10 else "")
        )
    flag = {"shares": UPLOADED_SHARES}
    partial = planning.create_partial_decryption_job(
        session, election_id, guardian_id, created_by, sizes, metadata=flag
    )
    children = (
        planning.create_compensated_decryption_jobs(
            session, partial.job_id, declared, created_by, sizes, metadata=flag
        )
        if declared
        else []
    )
    if options is not None:
        for job in [partial, *children]:
            options.apply(job)
    return Submitted(partial, children)


# ---------------------------------------------------------------------------------------------- bodies


def staged_document(
    session: Session, chunk_id: int, guardian_id: str, missing_guardian_id: str | None
) -> Any:
    """The staged document of a task (None if there is none): read by ``bridge/tasks/share_check.py``."""
    return session.scalar(
        select(ShareUpload.share).where(
            ShareUpload.chunk_id == chunk_id,
            ShareUpload.guardian_id == guardian_id,
            ShareUpload.missing_guardian_id == (missing_guardian_id or OWN_SHARE),
        )
    )


def erase_staged(session: Session, chunk_id: int, guardian_id: str, missing_guardian_id: str | None) -> None:
    """In the transaction that marks the task DONE: the document is now in its share table."""
    session.execute(
        delete(ShareUpload).where(
            ShareUpload.chunk_id == chunk_id,
            ShareUpload.guardian_id == guardian_id,
            ShareUpload.missing_guardian_id == (missing_guardian_id or OWN_SHARE),
        )
    )
