"""Results of a decrypted election, and its election record in the reference's layout (a zip or a
directory), written a file at a time.

A decryption unit's result (``election_center.result``: a slice's plaintexts, a spoiled run's decrypted
ballots) is written here alone (``write_unit_result``, from the combine task in its DONE transaction); the
combine's finalizer reads the units back to publish the election's tally (``service.jobs.finalize``).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from compute.ids import BALLOT_ID_MAX, GUARDIAN_ID_MAX
from compute.record import (
    GUARDIAN_PREFIX,
    GUARDIANS_DIR,
    SPOILED_BALLOT_PREFIX,
    SPOILED_BALLOTS_DIR,
    SUBMITTED_BALLOT_PREFIX,
    SUBMITTED_BALLOTS_DIR,
)
from service.db.models import Ballot, ChunkKind, Election, ElectionCenter, ElectionState, OperationType
from service.elections import crypto
from service.elections.elections import get_election, guardians_of
from service.errors import Conflict
from service.jobs import queries

RECORD_BATCH = 500  # ballot rows fetched per round trip while a record is written


def counts_of(tally: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Votes per contest and selection of a PlaintextTally JSON (the aggregate's or one spoiled ballot's)."""
    return {
        cid: {sid: int(s["tally"]) for sid, s in (c.get("selections") or {}).items()}
        for cid, c in (tally.get("contests") or {}).items()
    }


def write_unit_result(session: Session, unit_id: int, result: dict[str, Any]) -> None:
    """A decryption unit's combined result (``election_center.result``)."""
    row = session.get(ElectionCenter, unit_id)
    if row is None:
        raise LookupError(f"decryption unit {unit_id} does not exist")
    row.result = result


def _candidate_names(manifest: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(contest, selection) -> candidate id and, when the manifest has one, the candidate's name."""
    names: dict[str, str | None] = {}
    for c in manifest.get("candidates") or []:
        text = (
            ((c.get("name") or {}).get("text") or [{}])[0].get("value")
            if isinstance(c.get("name"), dict)
            else None
        )
        names[c["object_id"]] = text
    out = {}
    for contest in manifest.get("contests") or []:
        for s in contest.get("ballot_selections") or []:
            cid = s.get("candidate_id")
            out[(contest["object_id"], s["object_id"])] = {
                "candidate_id": cid,
                "candidate_name": names.get(cid),
            }
    return out


def results(session: Session, election_id: int) -> dict[str, Any]:
    e = get_election(session, election_id)
    if e.state != ElectionState.DECRYPTED.value or e.result is None:
        raise Conflict(f"election {election_id} is {e.state}: results exist once it is decrypted")
    labels = _candidate_names(e.manifest)
    contests = []
    for cid, sels in counts_of(e.result).items():
        contests.append(
            {
                "contest_id": cid,
                "selections": [
                    {"selection_id": sid, "votes": n, **labels.get((cid, sid), {})} for sid, n in sels.items()
                ],
            }
        )
    spoiled = dict(spoiled_counts(session, election_id))
    # Counts of the whole election only: a chunk's sub-tally is never decrypted, so there are no
    # per-chunk counts to show (they would be the votes of each small group of voters).
    return {
        "election_id": e.id,
        "state": e.state,
        "contests": contests,
        "spoiled_ballots": spoiled,
        "tally": e.result,
    }


def _lagrange(session: Session, e: Election) -> dict[str, str]:
    from compute.decryption import compute_lagrange_coefficients
    from compute.group import to_hex

    combine = queries.jobs_of(session, e.id, OperationType.COMBINE_DECRYPTION, ("COMPLETED",))
    if not combine:
        return {}
    available = set((combine[-1].metadata_ or {}).get("available_guardian_ids") or [])
    pairs = [
        (g.guardian_id, g.sequence_order) for g in guardians_of(session, e.id) if g.guardian_id in available
    ]
    return {gid: to_hex(w) for gid, w in compute_lagrange_coefficients(pairs).items()}


def header_files(session: Session, election_id: int) -> dict[str, Any]:
    """The record's small files (everything but the ballots and the spoiled ballots' decryptions), in the
    shape ``compute.record.header_files`` reads them from a record: what the export writes and what a
    VERIFY job checks (``compute.record.header_from_files``), from one function. Public data only."""
    from compute.record import standard_constants

    e = get_election(session, election_id)
    if e.context is None:
        raise Conflict(f"election {election_id} has no keys yet: nothing to export")
    return {
        "manifest": e.manifest,
        "context": e.context,
        "constants": standard_constants(),
        "coefficients": {"coefficients": _lagrange(session, e)},
        "encrypted_tally": e.encrypted_tally,
        "tally": e.result,
        "guardians": [g.public_record for g in guardians_of(session, e.id)],
        "devices": [],
    }


SPOILED_UNIT_ROWS = 4  # spoiled units (each a few ballots' decryptions with every share) read at a time


def _spoiled_units(
    session: Session, election_id: int, seqs: tuple[int, int] | None = None
) -> Iterator[dict[str, Any]]:
    """The decryptions held by each ``spoiled`` unit of the election's completed tally (those whose run of
    ballots meets ``seqs``, when given), a few units at a time. They stay in their units: the spoiled
    ballots' decryptions, every share and proof with them, grow with the election (about 300 KB a ballot
    of three contests), far past what one row or one process should hold."""
    for (doc,) in _spoiled_rows(session, election_id, ElectionCenter.result, seqs=seqs):
        yield dict((doc or {}).get("spoiled_ballots") or {})


def _spoiled_rows(
    session: Session, election_id: int, *columns: Any, seqs: tuple[int, int] | None = None
) -> Iterator[Any]:
    tally = queries.completed_tally_job(session, get_election(session, election_id))
    stmt = select(*columns).where(
        ElectionCenter.tally_job_id == tally.job_id, ElectionCenter.kind == ChunkKind.SPOILED.value
    )
    if seqs is not None:
        stmt = stmt.where(ElectionCenter.last_seq >= seqs[0], ElectionCenter.first_seq <= seqs[1])
    yield from session.execute(
        stmt.order_by(ElectionCenter.chunk_number).execution_options(yield_per=SPOILED_UNIT_ROWS)
    )


def spoiled_counts(session: Session, election_id: int) -> Iterator[tuple[str, dict[str, dict[str, int]]]]:
    """(ballot id, its votes per contest and selection) of every decrypted spoiled ballot: the counts the
    combine keeps beside each unit's decryptions (``spoiled_counts``), so that answering the results reads
    a few hundred bytes a ballot instead of its decryption's 300 KB. A unit combined before the counts were
    kept is read whole."""
    rows = _spoiled_rows(session, election_id, ElectionCenter.id, ElectionCenter.result["spoiled_counts"])
    for unit_id, counts in list(rows):
        if counts is None:
            doc = session.get(ElectionCenter, unit_id)
            decryptions = ((doc.result if doc else None) or {}).get("spoiled_ballots") or {}
            counts = {bid: counts_of(t) for bid, t in decryptions.items()}
        yield from counts.items()


def spoiled_decryptions(session: Session, election_id: int) -> Iterator[tuple[str, Any]]:
    """(ballot id, its decryption: PlaintextTally JSON) of every decrypted spoiled ballot, in seq order of
    their units, a few units in memory at a time."""
    for unit in _spoiled_units(session, election_id):
        yield from unit.items()


def spoiled_decryptions_of(
    session: Session, election_id: int, ids: Sequence[str], seqs: tuple[int, int]
) -> dict[str, Any]:
    """The decryptions of the spoiled ballots ``ids``, whose seqs lie within ``seqs`` (a batch of one
    chunk): only the units covering that run are read."""
    wanted = set(ids)
    if not wanted:
        return {}
    found: dict[str, Any] = {}
    for unit in _spoiled_units(session, election_id, seqs):
        found.update((bid, doc) for bid, doc in unit.items() if bid in wanted)
    return found


def decrypted_spoiled_ids(session: Session, election_id: int) -> list[str]:
    """The ids of every spoiled ballot with a decryption (one id per ballot kept, not its decryption)."""
    return [bid for unit in _spoiled_units(session, election_id) for bid in unit]


def decoded_ballots(session: Session, election_id: int) -> Iterator[Any]:
    """The election's submitted ballots in ``seq`` order, fetched ``RECORD_BATCH`` rows at a time and
    decoded one by one (never the whole election at once)."""
    stream = session.execute(
        select(Ballot.payload)
        .where(Ballot.election_id == election_id)
        .order_by(Ballot.seq)
        .execution_options(yield_per=RECORD_BATCH)
    ).scalars()
    for payload in stream:
        yield crypto.decode(payload)


def entry_name(folder: str, prefix: str, object_id: Any, max_length: int) -> str:
    """The record's name for an object's file, its id held to ``compute.ids``: a ballot stored before the
    rule (or by hand) whose id would name another place (``..``, ``/``) stops the export, named, rather
    than become an entry a careless extractor writes outside its folder."""
    from compute.ids import UnsafeId, check_id
    from compute.record import check_member, member

    try:
        return check_member(member(folder, prefix, check_id(object_id, f"{folder} id", max_length)))
    except (UnsafeId, ValueError) as exc:
        raise Conflict(f"the record cannot be written: {exc}") from None


def record_files(session: Session, election_id: int) -> Iterator[tuple[str, Any]]:
    """(name under ``election_record/``, JSON document) of every file of the election's record, in the
    layout of the reference's export_record. Ballots are read in batches (``yield_per``) and decoded one
    at a time: the caller writes each file before the next is made, so nothing holds the election."""
    header = header_files(session, election_id)
    yield "manifest.json", header["manifest"]
    yield "context.json", header["context"]
    yield "constants.json", header["constants"]
    yield "coefficients.json", header["coefficients"]
    for g in header["guardians"]:
        yield entry_name(GUARDIANS_DIR, GUARDIAN_PREFIX, g.get("guardian_id"), GUARDIAN_ID_MAX), g
    for b in decoded_ballots(session, election_id):
        yield (
            entry_name(SUBMITTED_BALLOTS_DIR, SUBMITTED_BALLOT_PREFIX, b.object_id, BALLOT_ID_MAX),
            b.to_json(),
        )
    if header["encrypted_tally"] is not None:
        yield "encrypted_tally.json", header["encrypted_tally"]
    if header["tally"] is not None:
        for bid, t in spoiled_decryptions(session, election_id):
            yield entry_name(SPOILED_BALLOTS_DIR, SPOILED_BALLOT_PREFIX, bid, BALLOT_ID_MAX), t
        yield "tally.json", header["tally"]


def write_record_zip(session: Session, election_id: int, out: IO[bytes]) -> None:
    """The election record (``election_record/...``) into ``out`` as a zip, a file at a time."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, doc in record_files(session, election_id):
            zf.writestr(f"election_record/{name}", json.dumps(doc, indent=2))


def write_record_dir(session: Session, election_id: int, out_dir: Path) -> Path:
    """The election record as files under ``out_dir/election_record``, a file at a time; returns that
    directory."""
    from compute.record import inside

    root = out_dir / "election_record"
    made: set[Path] = set()
    for name, doc in record_files(session, election_id):
        path = inside(root, name)  # resolved: never outside root, whatever the name
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with path.open("w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
    return root


def record_zip_file(session: Session, election_id: int) -> Path:
    """The record zip in a temporary file (the caller removes it after sending)."""
    f = tempfile.NamedTemporaryFile(prefix="amarvote-record-", suffix=".zip", delete=False)
    try:
        write_record_zip(session, election_id, f)
    except BaseException:
        f.close()
        Path(f.name).unlink(missing_ok=True)
        raise
    f.close()
    return Path(f.name)
