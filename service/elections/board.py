"""The public bulletin board: what anyone may see of an election, read from the rows its published record
is exported from (``service.elections.results``), and nothing else.

Shown: the manifest's contests and selections, the guardians (id, sequence order and a fingerprint of the
public key of each, as in ``guardians/*.json``), the counts of cast and spoiled ballots (the submitted
ballots' states), the tally once published (``tally.json``), a tracking code's ballot (its id and state;
a spoiled one's decryption once published, as in ``spoiled_ballots/``) and the verify job's verdict.
Never shown: job ids, creators, errors, escrow, timings, or anything only the operators see.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from compute.group import to_hex
from service.db.models import Ballot, BallotState, ElectionState, JobStatus, OperationType
from service.elections.elections import ballot_counts, get_election, guardians_of
from service.elections.results import counts_of, spoiled_decryptions_of
from service.jobs import queries
from service.jobs.verification import verdict_of

MAX_CODE = 80  # ballot.code
_CODE = re.compile(r"^[0-9A-Fa-f]{1,80}$")


def key_fingerprint(hex_key: str | None) -> str | None:
    """A short name for a guardian's public key, anyone can recompute from its record: the first 16 hex
    digits of the SHA-256 of its hex, in groups of four."""
    if not hex_key:
        return None
    digest = hashlib.sha256(hex_key.upper().encode("ascii")).hexdigest()[:16].upper()
    return " ".join(digest[i : i + 4] for i in range(0, 16, 4))


def _text(value: Any) -> str | None:
    """The first text of a manifest InternationalizedText, or the value itself when a plain string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        texts = value.get("text") or []
        if texts and isinstance(texts[0], dict):
            return texts[0].get("value")
    return None


def _contests(manifest: dict[str, Any], tally: dict[str, Any] | None) -> list[dict[str, Any]]:
    names = {c.get("object_id"): _text(c.get("name")) for c in manifest.get("candidates") or []}
    counts = counts_of(tally) if tally else {}
    out = []
    for contest in sorted(manifest.get("contests") or [], key=lambda c: c.get("sequence_order", 0)):
        cid = contest.get("object_id")
        selections = []
        for s in sorted(contest.get("ballot_selections") or [], key=lambda s: s.get("sequence_order", 0)):
            sid = s.get("object_id")
            selections.append(
                {
                    "selection_id": sid,
                    "candidate_id": s.get("candidate_id"),
                    "candidate_name": names.get(s.get("candidate_id")),
                    "votes": counts.get(cid, {}).get(sid) if tally else None,
                }
            )
        out.append(
            {
                "contest_id": cid,
                "name": contest.get("name") if isinstance(contest.get("name"), str) else None,
                "votes_allowed": contest.get("votes_allowed"),
                "selections": selections,
            }
        )
    return out


def board(session: Session, election_id: int) -> dict[str, Any]:
    """The board's document for one election (NotFound when there is none)."""
    e = get_election(session, election_id)
    published = e.state == ElectionState.DECRYPTED.value and e.result is not None
    counts = ballot_counts(session, election_id)
    guardians = [
        {
            "guardian_id": g.public_record.get("guardian_id", g.guardian_id),
            "sequence_order": g.public_record.get("sequence_order", g.sequence_order),
            "fingerprint": key_fingerprint(g.public_record.get("election_public_key")),
        }
        for g in guardians_of(session, election_id)
    ]
    return {
        "election_id": e.id,
        "title": _text(e.manifest.get("name")) or e.manifest.get("election_scope_id"),
        "scope_id": e.manifest.get("election_scope_id"),
        "state": e.state,
        "quorum": e.quorum if e.context is not None else None,
        "guardians": guardians,
        "cast": counts["cast"],
        "spoiled": counts["spoiled"],
        "contests": _contests(e.manifest, e.result if published else None),
        "published": published,
        "record_available": e.context is not None,
        "verification": verification(session, election_id) if published else None,
    }


def verification(session: Session, election_id: int) -> dict[str, Any] | None:
    """The latest completed verify job's verdict: whether the published record checked out, and how many
    problems it found (never the job, its creator or its errors)."""
    done = queries.jobs_of(session, election_id, OperationType.VERIFY, (JobStatus.COMPLETED.value,))
    verdict = verdict_of(done[-1]) if done else None
    if verdict is None:
        return None
    return {
        "verified": bool(verdict.get("verified")),
        "problem_count": int(verdict.get("problem_count") or 0),
    }


def lookup(session: Session, election_id: int, code: str) -> dict[str, Any]:
    """What a tracking code names: ``{"found": False}``, or its ballot id and state, and for a spoiled
    ballot its decryption (votes per contest and selection) once the election's results are published."""
    e = get_election(session, election_id)
    code = code.strip()
    if not _CODE.match(code):
        return {"found": False, "code": None}
    # Stored as the reference writes it (upper case, even digits): one form to look up, however typed.
    row = session.execute(
        select(Ballot.seq, Ballot.object_id, Ballot.state, Ballot.code).where(
            Ballot.election_id == election_id, Ballot.code == to_hex(int(code, 16))
        )
    ).first()
    if row is None:
        return {"found": False, "code": code}
    spoiled = row.state == BallotState.SPOILED
    out: dict[str, Any] = {
        "found": True,
        "code": row.code,
        "ballot_id": row.object_id,
        "state": "spoiled" if spoiled else "cast",
        "decryption": None,
    }
    if spoiled and e.state == ElectionState.DECRYPTED.value and e.result is not None:
        found = spoiled_decryptions_of(session, election_id, [row.object_id], (row.seq, row.seq))
        if row.object_id in found:
            counts = counts_of(found[row.object_id])
            out["decryption"] = [
                {
                    **contest,
                    "selections": [
                        {**s, "votes": counts.get(contest["contest_id"], {}).get(s["selection_id"])}
                        for s in contest["selections"]
                    ],
                }
                for contest in _contests(e.manifest, None)
            ]
    return out
