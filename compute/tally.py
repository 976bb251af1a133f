"""The encrypted tally (the reference's ``CiphertextTally``) and its published JSON (encrypted_tally.json).

Built from the internal manifest: one accumulator per contest selection, placeholders excluded.
``accumulate`` multiplies in the selections of CAST ballots; it does not check ballot proofs: the
caller validates ballots first (compute.validate), as the reference's ``batch_append`` does before
adding. Chunks are tallied separately and combined with ``add_tallies``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gmpy2 import mpz

from compute.constants import ONE, P
from compute.elgamal import Ciphertext
from compute.group import from_hex, to_hex

ELECTION_RESULTS = "election-results"  # the reference's tally object id


class TallyError(ValueError):
    pass


@dataclass(slots=True)
class CiphertextTallySelection:
    object_id: str
    sequence_order: int
    description_hash: mpz
    ciphertext: Ciphertext = field(default_factory=lambda: Ciphertext(ONE, ONE))

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "sequence_order": self.sequence_order,
            "description_hash": to_hex(self.description_hash),
            "ciphertext": self.ciphertext.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextTallySelection:
        return cls(
            d["object_id"],
            int(d["sequence_order"]),
            from_hex(d["description_hash"]),
            Ciphertext.from_json(d["ciphertext"]),
        )


@dataclass(slots=True)
class CiphertextTallyContest:
    object_id: str
    sequence_order: int
    description_hash: mpz
    selections: dict[str, CiphertextTallySelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "sequence_order": self.sequence_order,
            "description_hash": to_hex(self.description_hash),
            "selections": {k: s.to_json() for k, s in self.selections.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextTallyContest:
        return cls(
            d["object_id"],
            int(d["sequence_order"]),
            from_hex(d["description_hash"]),
            {k: CiphertextTallySelection.from_json(s) for k, s in d["selections"].items()},
        )


@dataclass(slots=True)
class CiphertextTally:
    """Contests -> selections -> accumulated ciphertext. JSON is the reference's PublishedCiphertextTally;
    the ballot id sets are bookkeeping that the published form does not carry."""

    object_id: str
    contests: dict[str, CiphertextTallyContest]
    cast_ballot_ids: set[str] = field(default_factory=set)
    spoiled_ballot_ids: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {"object_id": self.object_id, "contests": {k: c.to_json() for k, c in self.contests.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextTally:
        return cls(d["object_id"], {k: CiphertextTallyContest.from_json(c) for k, c in d["contests"].items()})

    def cast(self) -> int:
        return len(self.cast_ballot_ids)

    def spoiled(self) -> int:
        return len(self.spoiled_ballot_ids)

    def selections(self) -> Iterable[tuple[str, CiphertextTallySelection]]:
        for contest_id, contest in self.contests.items():
            for selection in contest.selections.values():
                yield contest_id, selection


def selection_keys(tally: CiphertextTally) -> list[tuple[str, str]]:
    """The (contest, selection) ids of a tally in a fixed order: by contest and selection sequence
    order, then id (independent of how the JSON was stored: PostgreSQL's JSONB reorders keys)."""
    keyed = [
        (c.sequence_order, c.object_id, s.sequence_order, s.object_id)
        for c in tally.contests.values()
        for s in c.selections.values()
    ]
    return [(cid, sid) for _, cid, _, sid in sorted(keyed)]


def slice_tally(tally: CiphertextTally, keys: Iterable[tuple[str, str]]) -> CiphertextTally:
    """The part of ``tally`` holding only the selections ``keys`` (same ids, hashes and ciphertexts): what
    one decryption task of a large manifest decrypts."""
    contests: dict[str, CiphertextTallyContest] = {}
    for cid, sid in keys:
        contest = tally.contests.get(cid)
        selection = None if contest is None else contest.selections.get(sid)
        if contest is None or selection is None:
            raise TallyError(f"the tally has no selection {cid}/{sid}")
        into = contests.setdefault(
            cid, CiphertextTallyContest(cid, contest.sequence_order, contest.description_hash, {})
        )
        into.selections[sid] = selection
    return CiphertextTally(tally.object_id, contests)


def slices(tally: CiphertextTally, size: int) -> list[list[tuple[str, str]]]:
    """The tally's selections in runs of at most ``size`` (every selection in exactly one run)."""
    if size < 1:
        raise ValueError("a slice holds at least one selection")
    keys = selection_keys(tally)
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def new_tally(internal_manifest: Any, object_id: str = ELECTION_RESULTS) -> CiphertextTally:
    """An empty tally for an InternalManifest (contests with ``ballot_selections`` and ``crypto_hash()``)."""
    contests = {}
    for contest in internal_manifest.contests:
        selections = {
            s.object_id: CiphertextTallySelection(s.object_id, s.sequence_order, s.crypto_hash())
            for s in contest.ballot_selections
        }
        contests[contest.object_id] = CiphertextTallyContest(
            contest.object_id, contest.sequence_order, contest.crypto_hash(), selections
        )
    return CiphertextTally(object_id, contests)


def _state_name(state: Any) -> str:
    name = getattr(state, "name", None)
    if name is not None:
        return str(name)
    return {1: "CAST", 2: "SPOILED"}.get(int(state), "UNKNOWN")


def accumulate(tally: CiphertextTally, submitted_ballots: Iterable[Any]) -> CiphertextTally:
    """Add CAST ballots' selections into ``tally`` (in place; also returned); record SPOILED ids.

    A ballot already counted is skipped (the reference refuses it the same way). A cast ballot must
    hold every tally selection of each contest it carries, else TallyError names it.
    """
    # Running products live in plain lists while the batch is added (no Ciphertext per step), and
    # each contest's selection ids are checked as a set against the tally's precomputed key view.
    running = {
        cid: {sid: [sel.ciphertext.pad, sel.ciphertext.data] for sid, sel in c.selections.items()}
        for cid, c in tally.contests.items()
    }
    try:
        for ballot in submitted_ballots:
            state = _state_name(ballot.state)
            if ballot.object_id in tally.cast_ballot_ids or ballot.object_id in tally.spoiled_ballot_ids:
                continue
            if state == "SPOILED":
                tally.spoiled_ballot_ids.add(ballot.object_id)
                continue
            if state != "CAST":
                raise TallyError(f"ballot {ballot.object_id}: state {state} is neither cast nor spoiled")
            updates = []
            for contest in ballot.contests:
                accs = running.get(contest.object_id)
                if accs is None:
                    raise TallyError(
                        f"ballot {ballot.object_id}: contest {contest.object_id} is not in the manifest"
                    )
                real = [s for s in contest.ballot_selections if not s.is_placeholder_selection]
                if len(real) != len(accs) or {s.object_id for s in real} != accs.keys():
                    raise TallyError(
                        f"ballot {ballot.object_id}: contest {contest.object_id} selections do not match"
                    )
                updates += [(accs[s.object_id], s.ciphertext) for s in real]
            for acc, c in updates:
                acc[0] = acc[0] * c.pad % P
                acc[1] = acc[1] * c.data % P
            tally.cast_ballot_ids.add(ballot.object_id)
    finally:
        # Also on a refused ballot: what was added before it stays added, as before.
        for cid, accs in running.items():
            for sid, (pad, data) in accs.items():
                tally.contests[cid].selections[sid].ciphertext = Ciphertext(pad, data)
    return tally


def add_tallies(a: CiphertextTally, b: CiphertextTally, object_id: str | None = None) -> CiphertextTally:
    """The tally of the union of two disjoint sets of ballots (chunks): selection-wise products."""
    if set(a.contests) != set(b.contests):
        raise TallyError("tallies have different contests")
    if overlap := a.cast_ballot_ids & b.cast_ballot_ids:
        raise TallyError(f"ballots counted in both tallies: {sorted(overlap)[:5]}")
    contests = {}
    for cid, ca in a.contests.items():
        cb = b.contests[cid]
        if set(ca.selections) != set(cb.selections) or ca.description_hash != cb.description_hash:
            raise TallyError(f"contest {cid} differs between tallies")
        selections = {}
        for sid, sa in ca.selections.items():
            sb = cb.selections[sid]
            if sa.description_hash != sb.description_hash:
                raise TallyError(f"selection {sid} differs between tallies")
            selections[sid] = CiphertextTallySelection(
                sid, sa.sequence_order, sa.description_hash, sa.ciphertext + sb.ciphertext
            )
        contests[cid] = CiphertextTallyContest(cid, ca.sequence_order, ca.description_hash, selections)
    return CiphertextTally(
        object_id or a.object_id,
        contests,
        a.cast_ballot_ids | b.cast_ballot_ids,
        a.spoiled_ballot_ids | b.spoiled_ballot_ids,
    )


def sum_tallies(tallies: Iterable[CiphertextTally], object_id: str = ELECTION_RESULTS) -> CiphertextTally:
    it = iter(tallies)
    try:
        acc = next(it)
    except StopIteration:
        raise TallyError("no tallies to add") from None
    for t in it:
        acc = add_tallies(acc, t, object_id)
    acc.object_id = object_id
    return acc
