"""What a guardian checks before it decrypts anything: that what it is asked to decrypt is what the election
published. A guardian that decrypts whatever it is sent is a decryption oracle: a service (or whoever
holds its database) could present a cast ballot's ciphertexts as a "slice" or as a "spoiled ballot" and
learn that voter's vote from the shares. Pure: the caller feeds what the API served, page by page.

- **The aggregate** (``GET .../encrypted-tally``) must be the product of the cast ballots' selection
  ciphertexts (``GET .../cast-ciphertexts``, streamed: only the running products, one per selection of
  the manifest, and 8 bytes per ciphertext are kept).
- **No repeats**: no selection ciphertext appears twice among the cast ballots and the ballots presented
  for individual decryption (8-byte prefixes of each fingerprint in a ``PrefixSet``; the suspects, if
  any, are checked exactly on a second pass over the cast ballots).
- **The units**: a slice's targets are exactly the aggregate's selections (same ids, description hashes
  and ciphertexts; the slices together cover every selection once); a spoiled run's ballots are published
  spoiled ballots (``GET .../spoiled-ballots``), each presented once, none cast.
- **The spoiled ballots themselves**: each ballot presented for decryption, as the election published it
  (``GET .../ballots/{id}``), is SPOILED, valid for the election's manifest and context
  (``compute.validate.validate_ballots``: every proof, every hash, the tracking code) and presented with
  exactly its own ciphertexts (same contests, description hashes, selections, pads and data, in order).
  Without this a cast ballot re-randomised (each ciphertext times an encryption of zero: the same votes
  under ciphertexts no fingerprint matches) and published as spoiled would be decrypted. Its proofs give
  it away: each Fiat-Shamir challenge covers its ciphertext, and a proof for the new one needs the
  ballot's nonces. Only a 32-byte digest of each presented target is kept; the ballots come a page at a
  time.

Use: ``add_spoiled_ids`` (every page), ``add_unit`` (every unit), ``spoiled_to_check()`` and
``add_spoiled_ballots`` for them a page at a time, ``add_cast_page`` (every page), then ``suspects()``; if
it is not empty, ``add_suspect_page`` for every page again; then ``problems()`` (a presented ballot never
handed to ``add_spoiled_ballots`` is a problem: the check fails closed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gmpy2 import mpz

from compute.ballot import BallotBoxState, SubmittedBallot
from compute.constants import ONE, P
from compute.context import ElectionContext
from compute.decryption_target import Target, target_of
from compute.elgamal import Ciphertext
from compute.fingerprints import (
    PREFIX_BYTES,
    PrefixSet,
    ciphertext_fingerprint,
    packed_fingerprint,
    repeats_among,
)
from compute.group import mpz_from_bytes
from compute.manifest import InternalManifest
from compute.tally import CiphertextTally
from compute.validate import validate_ballots

ELEMENT_BYTES = 512
MAX_PROBLEMS = 20  # named; the rest counted


def target_digest(target: Target) -> bytes:
    """SHA-256 of a target's JSON (contest and selection ids, description hashes, pads and data, in the
    order the shares are made in): two targets are equal exactly when their digests are."""
    return hashlib.sha256(json.dumps(target.to_json(), separators=(",", ":")).encode()).digest()


class PublishedCheck:
    """The checks above, fed incrementally; ``problems()`` is empty when the guardian may decrypt."""

    def __init__(self, aggregate: CiphertextTally) -> None:
        self.aggregate = aggregate
        self.products: dict[tuple[str, str], list[mpz]] = {
            (cid, s.object_id): [ONE, ONE] for cid, s in aggregate.selections()
        }
        self.spoiled_ids: set[str] = set()
        # spoiled ballots presented for decryption in the units: (unit label, digest of the target)
        self.presented: dict[str, tuple[str, bytes]] = {}
        self.spoiled_checked: set[str] = set()  # those checked against the ballot the election published
        self.covered: set[tuple[str, str]] = set()  # aggregate selections presented in slices
        self.prefixes = PrefixSet()
        self.spoiled_fingerprints: list[tuple[str, list[bytes]]] = []
        self.cast = 0
        self.last_seq = 0
        self._suspects: set[bytes] | None = None
        self._cast_suspects: list[tuple[str, list[bytes]]] = []
        self._problems: list[str] = []
        self._more = 0

    def _problem(self, text: str) -> None:
        if len(self._problems) < MAX_PROBLEMS:
            self._problems.append(text)
        else:
            self._more += 1

    # ------------------------------------------------------------------------------- what is published

    def add_spoiled_ids(self, ids: Iterable[str]) -> None:
        for i in ids:
            if i in self.spoiled_ids:
                self._problem(f"spoiled ballot {i} is published twice")
            self.spoiled_ids.add(i)

    def add_unit(self, label: str, kind: str, targets: list[Target]) -> None:
        """One decryption unit as served: a slice (one target: some selections of the aggregate) or a
        spoiled run (one target per ballot)."""
        if kind == "slice":
            if len(targets) != 1:
                self._problem(f"{label}: a slice presents {len(targets)} targets, not one")
            for t in targets:
                self._slice(label, t)
        elif kind == "spoiled":
            for t in targets:
                self._spoiled(label, t)
        else:
            self._problem(f"{label}: unknown kind of unit {kind!r}")

    def _slice(self, label: str, target: Target) -> None:
        if target.object_id != self.aggregate.object_id:
            self._problem(f"{label}: presents {target.object_id!r}, not the aggregate tally")
        for c in target.contests:
            contest = self.aggregate.contests.get(c.object_id)
            if contest is None:
                self._problem(f"{label}: contest {c.object_id} is not in the aggregate tally")
                continue
            if c.description_hash != contest.description_hash:
                self._problem(f"{label}: contest {c.object_id}'s description hash is not the aggregate's")
            for sid, ct in c.selections:
                sel = contest.selections.get(sid)
                key = (c.object_id, sid)
                if sel is None:
                    self._problem(f"{label}: selection {c.object_id}/{sid} is not in the aggregate tally")
                elif sel.ciphertext != ct:
                    self._problem(
                        f"{label}: selection {c.object_id}/{sid}'s ciphertext is not the aggregate's"
                    )
                elif key in self.covered:
                    self._problem(f"{label}: selection {c.object_id}/{sid} is presented twice")
                self.covered.add(key)

    def _spoiled(self, label: str, target: Target) -> None:
        bid = target.object_id
        if bid not in self.spoiled_ids:
            self._problem(f"{label}: ballot {bid} is presented for decryption but not published as spoiled")
        if bid in self.presented:
            self._problem(f"{label}: ballot {bid} is presented for decryption twice")
        else:
            self.presented[bid] = (label, target_digest(target))
        fps = [ciphertext_fingerprint(ct) for _, _, ct in target.items()]
        self.prefixes.add(b"".join(fp[:PREFIX_BYTES] for fp in fps))
        self.spoiled_fingerprints.append((f"spoiled ballot {bid} (presented for decryption)", fps))

    def spoiled_to_check(self) -> list[str]:
        """The ballots presented for individual decryption, in the order met: the caller fetches each as
        the election published it and hands them to ``add_spoiled_ballots``, a page at a time."""
        return list(self.presented)

    def add_spoiled_ballots(
        self, ballots: Sequence[SubmittedBallot], manifest: InternalManifest, context: ElectionContext
    ) -> None:
        """A page of the ballots ``spoiled_to_check`` names, as the election published them (a ballot the
        API did not serve is left out: it stays unchecked, a problem). Each must be SPOILED, valid for
        ``manifest`` and ``context`` (every proof, every hash, the tracking code) and presented with exactly
        its own ciphertexts."""
        page: dict[str, SubmittedBallot] = {}
        for b in ballots:
            bid = b.object_id
            if bid not in self.presented:
                self._problem(f"ballot {bid} was served for a check but is not presented for decryption")
            elif bid in self.spoiled_checked or bid in page:
                self._problem(f"spoiled ballot {bid} (presented for decryption) was served twice for a check")
            else:
                page[bid] = b
        if not page:
            return
        if manifest.manifest_hash != context.manifest_hash:
            self._problem(
                "the manifest served is not the one the election's context was made for (its hash differs):"
                " the spoiled ballots cannot be checked"
            )
            return
        try:
            failures = {f.ballot_id: f for f in validate_ballots(list(page.values()), manifest, context)}
        except ValueError as exc:  # the context's key outside the group (it was checked: not expected)
            self._problem(f"the spoiled ballots cannot be checked against the election's context: {exc}")
            return
        for bid, b in page.items():
            self.spoiled_checked.add(bid)
            label, digest = self.presented[bid]
            name = f"spoiled ballot {bid} (presented for decryption)"
            if b.state != BallotBoxState.SPOILED:
                state = b.state.name.lower() if isinstance(b.state, BallotBoxState) else repr(b.state)
                self._problem(f"{name} is published as {state}, not spoiled")
            if (failure := failures.get(bid)) is not None:
                self._problem(f"{name} is not a valid ballot of this election: {failure.message}")
            if target_digest(target_of(b)) != digest:
                self._problem(
                    f"{label}: ballot {bid} is presented with ciphertexts that are not the ones the election"
                    " published for it"
                )

    @staticmethod
    def _packed(ballot_id: str, packed: Any) -> bytes:
        try:
            raw = base64.b64decode(packed, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raw = b""
        if len(raw) != 2 * ELEMENT_BYTES:
            raise ValueError(f"cast ballot {ballot_id}: a selection ciphertext is not 1,024 bytes of base64")
        return raw

    def add_cast_page(self, ballots: Iterable[Mapping[str, Any]]) -> None:
        """A page of ``GET .../cast-ciphertexts``: ``{seq, object_id, selections: [[contest, selection,
        base64(pad || data), placeholder]]}`` per ballot, in seq order."""
        for b in ballots:
            bid, seq = str(b["object_id"]), int(b["seq"])
            if seq <= self.last_seq:
                self._problem(f"cast ballot {bid}: seq {seq} is out of order (pages repeat or overlap)")
            self.last_seq = max(self.last_seq, seq)
            if bid in self.spoiled_ids:
                self._problem(f"ballot {bid} is published both as cast and as spoiled")
            self.cast += 1
            prefixes = []
            for cid, sid, packed, placeholder in b["selections"]:
                raw = self._packed(bid, packed)
                prefixes.append(packed_fingerprint(raw)[:PREFIX_BYTES])
                if placeholder:
                    continue
                acc = self.products.get((cid, sid))
                if acc is None:
                    self._problem(f"cast ballot {bid}: selection {cid}/{sid} is not in the aggregate tally")
                    continue
                acc[0] = acc[0] * mpz_from_bytes(raw[:ELEMENT_BYTES]) % P
                acc[1] = acc[1] * mpz_from_bytes(raw[ELEMENT_BYTES:]) % P
            self.prefixes.add(b"".join(prefixes))

    def suspects(self) -> set[bytes]:
        """The fingerprint prefixes seen more than once: if any, every cast page again through
        ``add_suspect_page`` (only ballots holding one are kept, with their exact fingerprints)."""
        if self._suspects is None:
            self._suspects = self.prefixes.repeated()
        return self._suspects

    def add_suspect_page(self, ballots: Iterable[Mapping[str, Any]]) -> None:
        suspects = self.suspects()
        for b in ballots:
            bid = str(b["object_id"])
            fps = [packed_fingerprint(self._packed(bid, s[2])) for s in b["selections"]]
            if any(fp[:PREFIX_BYTES] in suspects for fp in fps):
                self._cast_suspects.append((f"cast ballot {bid}", fps))

    # ---------------------------------------------------------------------------------------- verdict

    def problems(self) -> list[str]:
        """Every reason not to decrypt (empty: decrypt). Call after every page and unit was added."""
        out = list(self._problems)
        if unchecked := [b for b in self.presented if b not in self.spoiled_checked]:
            if len(unchecked) == 1:
                out.append(
                    f"spoiled ballot {unchecked[0]} (presented for decryption) was not checked against the"
                    " ballot the election published"
                )
            else:
                out.append(
                    f"{len(unchecked)} spoiled ballots presented for decryption were not checked against the"
                    f" ballots the election published ({', '.join(unchecked[:5])}"
                    + (", ...)" if len(unchecked) > 5 else ")")
                )
        for (cid, sid), (pad, data) in self.products.items():
            sel = self.aggregate.contests[cid].selections[sid]
            if sel.ciphertext != Ciphertext(pad, data):
                out.append(
                    f"the aggregate's selection {cid}/{sid} is not the product of the {self.cast} cast"
                    " ballots' ciphertexts"
                )
        if uncovered := sorted(set(self.products) - self.covered):
            shown = ", ".join(f"{c}/{s}" for c, s in uncovered[:5])
            out.append(f"the slices leave {len(uncovered)} selection(s) of the aggregate out ({shown})")
        if self.suspects():
            candidates = self._cast_suspects + [
                (label, fps)
                for label, fps in self.spoiled_fingerprints
                if any(fp[:PREFIX_BYTES] in self.suspects() for fp in fps)
            ]
            for later, earlier in repeats_among(candidates):
                if later == earlier:
                    out.append(f"{later} repeats one of its own selection ciphertexts")
                else:
                    out.append(f"{later} repeats a selection ciphertext of {earlier}")
        if self._more:
            out.append(f"(+{self._more} more problems)")
        return out
