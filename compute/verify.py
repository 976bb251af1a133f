"""Check a whole election record; every problem names the object that fails.

Checks: the constants; the guardians' Schnorr proofs, joint key, commitment hash and the context's
hashes; every submitted ballot's proofs (compute.validate), and that no ballot repeats a selection
ciphertext of another (compute.fingerprints: a clone under a new id passes every proof); the encrypted
tally against the product of the cast ballots; for the tally and every spoiled ballot: one share per
guardian, every Chaum-Pedersen proof (batched, bisected only if the batch fails), the recovery keys
(recomputed from the missing guardian's commitments) and the Lagrange reconstruction of missing
guardians' shares (also batched), and g^t = B / prod M_i for each selection.

The ballots are checked a batch at a time (``RecordCheck.check_ballots``, or ``check_chunk`` on the raw
files): each batch gives a ``ChunkReport`` of its problems, the product of its cast ballots and 8-byte
prefixes of its selection fingerprints, which ``Totals`` adds up and ``RecordCheck.finish`` compares with
the encrypted tally. So the batches can run anywhere and a verifier holds one batch, the running products
and 8 bytes per selection ciphertext, never the election.

Every verifier of a record's files has the same units (``plan_chunks``, ``Plan.units``: the chunks of
ballots, then the tally's shares; ``check_unit`` checks one) and every verifier, the VERIFY job's
finalizer too, the same closing (``Summary``: the reports added up in any order, the problems listed in
unit order, then ``RecordCheck.finish``); ``verify_source`` runs the units in this process,
``bridge/verify.py`` on Ray.
Only when two prefixes agree are the ballots read again to name the repeating pair exactly
(``RecordCheck.repeats``). Tracking codes get the same treatment (8 bytes per ballot): two ballots sharing a
code are named (``RecordCheck.shared_codes``).

Nothing is skipped: every entry of a record's files that is not one of its known files (an unknown file, a
subfolder, a name whose id fails ``compute.ids``) is a problem naming it (``compute.record.layout_problems``),
every ballot and guardian id must pass the rule, and the counts reported are those of the ballots checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gmpy2 import mpz

from compute.ballot import SubmittedBallot
from compute.chaum_pedersen import ShareStatement, verify_shares
from compute.constants import ONE, P
from compute.context import make_context
from compute.decryption import compute_lagrange_coefficients, compute_recovery_public_key
from compute.elgamal import Ciphertext
from compute.fingerprints import (
    PREFIX_BYTES,
    PrefixSet,
    repeat_message,
    repeats_among,
    selection_fingerprints,
)
from compute.group import g_pow_p, to_hex
from compute.guardian import GuardianRecord
from compute.ids import GUARDIAN_ID_MAX, check_id
from compute.keyceremony import commitment_hash, joint_public_key, verify_public_keys
from compute.manifest import InternalManifest
from compute.plaintext_tally import PlaintextTally
from compute.record import (
    SPOILED_BALLOT_PREFIX,
    SPOILED_BALLOTS_DIR,
    SUBMITTED_BALLOT_PREFIX,
    SUBMITTED_BALLOTS_DIR,
    ElectionRecord,
    RecordSource,
    ballot_id_of,
    layout_problems,
    member,
    read_header,
    standard_constants,
)
from compute.share_checks import Reconstruction, reconstruction_problems
from compute.tally import TallyError, accumulate, new_tally
from compute.validate import selection_count, validate_ballots

# (and of each tracking code, for the shared-code check: 8 bytes per ballot)
BATCH = 200  # ballots checked together in one process (a few MB of decoded ballots)
UNIT_MAX_BALLOTS = 1000  # unit_ballots' ceiling, for ballots of very few selections
# Selections per unit and per proof group: a unit holds its files and decoded ballots, about 15 KiB a
# selection, three times what a tally task holds per selection of its batch (compute.validate)
UNIT_SELECTIONS = 10_000


def unit_ballots(internal: InternalManifest) -> int:
    """Ballots per unit of ``verify_source`` when its caller names none: ``UNIT_SELECTIONS``
    selections of the largest ballot the manifest allows (every contest, placeholders included), between
    ``BATCH`` and ``UNIT_MAX_BALLOTS`` ballots. A unit holds its files and decoded ballots, about 15 KiB a
    selection (peak RSS, benchmarks/bench_record_verify.py): 10,000 selections are about 150 MiB beside the
    process's own. On a 2,000-ballot record of 6-selection ballots on one core, units of 1,000 ballots took
    8.9 s (145 MiB) against 10.4 s (61 MiB) for units of 200; with 31-selection ballots (6,200 selections
    in 200) a larger unit gained 2% for 180 MiB more, so the ceiling is in selections."""
    per_ballot = sum(
        len(c.description.ballot_selections) + len(c.placeholder_selections) for c in internal.contests
    )
    return max(BATCH, min(UNIT_MAX_BALLOTS, UNIT_SELECTIONS // max(1, per_ballot)))


def proof_group(ballots: Sequence[SubmittedBallot], workers: int = 1) -> int:
    """Ballots per proof batch in ``RecordCheck.check_ballots``: one batch per thread (a whole unit in one
    group would use one core), each of up to ``UNIT_SELECTIONS`` selections (at least 256
    ballots, the earlier fixed cap): a larger batch costs fewer multiplies per selection. Its terms take
    about 2.1 KiB a selection beside the unit's ballots, which are held anyway. Measured with
    benchmarks/bench_record_verify.py on a 2,000-ballot record of 6 selections a ballot, units of 1,000
    ballots on one core: 8.9 s in one group of 1,000 against 9.9 s in groups of 250."""
    per_ballot = max((selection_count(b) for b in ballots), default=1)
    cap = max(256, UNIT_SELECTIONS // max(1, per_ballot))
    return max(1, min(cap, -(-len(ballots) // max(1, workers))))


class _ShareChecker:
    """Collects the proofs of every plaintext (tally, spoiled ballots) to batch them at the end."""

    def __init__(self, guardians: list[GuardianRecord]) -> None:
        self.by_id = {g.guardian_id: g for g in guardians}
        self.seq = {g.guardian_id: g.sequence_order for g in guardians}
        self.statements: list[ShareStatement] = []
        self.reconstructions: list[Reconstruction] = []
        self.problems: list[str] = []
        self._recovery: dict[tuple[str, str], mpz] = {}
        self._lagrange: dict[frozenset[str], dict[str, mpz]] = {}
        self.available_sets: set[frozenset[str]] = set()

    def drain(self, extended_base_hash: mpz) -> list[str]:
        """The problems of everything collected since the last drain (proofs checked in one batch)."""
        # Every part of a reconstruction is a statement below, or a problem already (a wrong recovery key)
        problems = self.problems + reconstruction_problems(self.reconstructions, parts_checked=True)
        # Every target here is in the subgroup once the record verifies: a spoiled ballot's ciphertexts
        # are the submitted ballot's, whose proofs this verifier checks, and the tally must equal the
        # product of the checked cast ballots (``RecordCheck.finish``); a target outside makes one of those
        # a problem, so its own membership terms would add nothing to the verdict.
        problems += verify_shares(self.statements, extended_base_hash, targets_checked=True)
        self.problems, self.reconstructions, self.statements = [], [], []
        return problems

    def recovery_key(self, present: str, missing: str) -> mpz:
        key = (present, missing)
        if key not in self._recovery:
            self._recovery[key] = compute_recovery_public_key(self.seq[present], self.by_id[missing])
        return self._recovery[key]

    def lagrange(self, ids: frozenset[str]) -> dict[str, mpz]:
        if ids not in self._lagrange:
            self._lagrange[ids] = compute_lagrange_coefficients((g, self.seq[g]) for g in ids)
        return self._lagrange[ids]

    def plaintext(
        self, label: str, plaintext: PlaintextTally, ciphertexts: dict[tuple[str, str], Ciphertext]
    ) -> None:
        seen = set()
        for cid, contest in plaintext.contests.items():
            for sid, sel in contest.selections.items():
                where = f"{label}/{cid}/{sid}"
                seen.add((cid, sid))
                ct = ciphertexts.get((cid, sid))
                if ct is None:
                    self.problems.append(f"{where}: not in the encrypted object")
                    continue
                if sel.message != ct:
                    self.problems.append(f"{where}: decrypted message differs from the encrypted one")
                    continue
                self._selection(where, sel, ct)
        if missing := set(ciphertexts) - seen:
            self.problems.append(f"{label}: selections not decrypted: {sorted(missing)[:5]}")

    def _selection(self, where: str, sel: Any, ct: Ciphertext) -> None:
        ids = [s.guardian_id for s in sel.shares]
        if sorted(ids) != sorted(self.by_id):
            self.problems.append(f"{where}: shares from {sorted(ids)}, expected one per guardian")
            return
        product = ONE
        for share in sel.shares:
            gid = share.guardian_id
            product = product * share.share % P
            if share.proof is not None and share.recovered_parts is None:
                self.statements.append(
                    ShareStatement(
                        f"guardian {gid}: share of {where}",
                        ct,
                        self.by_id[gid].election_public_key,
                        share.share,
                        share.proof,
                    )
                )
            elif share.recovered_parts is not None and share.proof is None:
                self._reconstructed(where, gid, share, ct)
            else:
                self.problems.append(f"guardian {gid}: share of {where} needs a proof or recovered parts")
        if g_pow_p(sel.tally) != sel.value:
            self.problems.append(f"{where}: value is not g^{sel.tally}")
        elif sel.value * product % P != ct.data:
            self.problems.append(f"{where}: g^tally times the shares is not the ciphertext's data")

    def _reconstructed(self, where: str, missing: str, share: Any, ct: Ciphertext) -> None:
        parts = share.recovered_parts
        unknown = [g for g in parts if g not in self.by_id or g == missing]
        if unknown:
            self.problems.append(
                f"missing guardian {missing}: parts from unexpected guardians {unknown} in {where}"
            )
            return
        ids = frozenset(parts)
        self.available_sets.add(ids)
        for g, part in parts.items():
            if part.recovery_key != self.recovery_key(g, missing):
                self.problems.append(
                    f"guardian {g}: wrong recovery key for missing guardian {missing} in {where}"
                )
                continue
            self.statements.append(
                ShareStatement(
                    f"guardian {g}: compensated share for missing guardian {missing} of {where}",
                    ct,
                    part.recovery_key,
                    part.share,
                    part.proof,
                )
            )
        self.reconstructions.append(
            Reconstruction(
                f"missing guardian {missing}: share of {where} is not the Lagrange reconstruction",
                share.share,
                {g: p.share for g, p in parts.items()},
                self.lagrange(ids),
            )
        )


def verify_guardians(record: ElectionRecord) -> list[str]:
    problems = []
    ctx = record.context
    if record.constants != standard_constants():
        problems.append("constants: not the standard group")
    if len(record.guardians) != ctx.number_of_guardians:
        problems.append(f"guardians: {len(record.guardians)} records for {ctx.number_of_guardians} guardians")
    problems += verify_public_keys([g.public_key() for g in record.guardians], ctx.quorum)
    if joint_public_key(record.guardians) != ctx.elgamal_public_key:
        problems.append("context: elgamal_public_key is not the product of the guardians' keys")
    if commitment_hash(record.guardians) != ctx.commitment_hash:
        problems.append("context: commitment_hash does not match the guardians' commitments")
    manifest_hash = record.manifest.crypto_hash()
    if manifest_hash != ctx.manifest_hash:
        problems.append("context: manifest_hash is not the manifest's hash")
    expected = make_context(
        ctx.number_of_guardians, ctx.quorum, ctx.elgamal_public_key, ctx.commitment_hash, ctx.manifest_hash
    )
    if (expected.crypto_base_hash, expected.crypto_extended_base_hash) != (
        ctx.crypto_base_hash,
        ctx.crypto_extended_base_hash,
    ):
        problems.append("context: crypto_base_hash or crypto_extended_base_hash is wrong")
    return problems


@dataclass
class ChunkReport:
    """What one batch of ballots (or the tally's shares) gave; public data only."""

    ballots: int = 0
    cast: int = 0
    spoiled: int = 0
    problems: list[str] = field(default_factory=list)
    # (contest, selection) -> (pad, data) products of the batch's cast ballots
    products: dict[tuple[str, str], tuple[mpz, mpz]] = field(default_factory=dict)
    prefixes: bytes = b""  # PREFIX_BYTES of every selection fingerprint, in ballot order
    codes: bytes = b""  # PREFIX_BYTES of every ballot's tracking code, in ballot order
    available_sets: set[frozenset[str]] = field(default_factory=set)
    failed_ballots: list[str] = field(default_factory=list)  # ids (or file names) named by a problem

    def merge(self, other: ChunkReport) -> None:
        """Add ``other`` (another batch of the same unit) into this report: counts, problems, products
        multiplied, prefixes appended."""
        self.ballots += other.ballots
        self.cast += other.cast
        self.spoiled += other.spoiled
        self.problems += other.problems
        self.failed_ballots += other.failed_ballots
        self.available_sets |= other.available_sets
        _multiply_into(self.products, other.products)
        self.prefixes += other.prefixes
        self.codes += other.codes


def _multiply_into(
    products: dict[tuple[str, str], tuple[mpz, mpz]], more: Mapping[tuple[str, str], tuple[mpz, mpz]]
) -> None:
    for key, (pad, data) in more.items():
        if key in products:
            a, b = products[key]
            products[key] = (a * pad % P, b * data % P)
        else:
            products[key] = (pad, data)


def code_prefix(code: mpz) -> bytes:
    return int(code).to_bytes(32, "big")[:PREFIX_BYTES]


class Totals:
    """The reports added up: counts, problems, the cast products, and the prefixes of the selection
    fingerprints and of the tracking codes."""

    def __init__(self) -> None:
        self.ballots = self.cast = self.spoiled = 0
        self.problems: list[str] = []
        self.products: dict[tuple[str, str], tuple[mpz, mpz]] = {}
        self.available_sets: set[frozenset[str]] = set()
        self.failed_ballots: list[str] = []
        self.fingerprints = PrefixSet()
        self.codes = PrefixSet()

    def add(self, r: ChunkReport) -> None:
        self.ballots += r.ballots
        self.cast += r.cast
        self.spoiled += r.spoiled
        self.problems += r.problems
        self.failed_ballots += r.failed_ballots
        self.available_sets |= r.available_sets
        _multiply_into(self.products, r.products)
        self.fingerprints.add(r.prefixes)
        self.codes.add(r.codes)

    def repeated_prefixes(self) -> set[bytes]:
        return self.fingerprints.repeated()

    def repeated_codes(self) -> set[bytes]:
        return self.codes.repeated()


class RecordCheck:
    """The checks of one record, built from its header (``read_header``): the parts that need the
    whole record (guardians, tally, the final comparisons) and one batch of ballots at a time."""

    def __init__(self, header: ElectionRecord) -> None:
        self.header = header
        self.context = header.context
        self.internal = InternalManifest.from_manifest(header.manifest)
        self.described = {
            (c.object_id, s.object_id) for c in self.internal.contests for s in c.ballot_selections
        }
        self.shares = _ShareChecker(header.guardians)

    def header_problems(self) -> list[str]:
        problems = []
        for g in self.header.guardians:
            try:
                check_id(g.guardian_id, "guardian_id", GUARDIAN_ID_MAX)
            except ValueError as exc:
                problems.append(f"guardian {g.guardian_id!r}: {exc}")
        return problems + verify_guardians(self.header)

    def check_ballots(
        self,
        ballots: Sequence[SubmittedBallot],
        decryptions: Mapping[str, PlaintextTally],
        workers: int = 1,
    ) -> ChunkReport:
        """One batch: every proof, the fingerprint prefixes, the cast product, and each spoiled ballot's
        decryption (``decryptions``: the batch's files in spoiled_ballots/, by ballot id)."""
        report = ChunkReport(ballots=len(ballots))
        for b in ballots:
            try:
                check_id(b.object_id, "its object_id")
            except ValueError as exc:
                report.problems.append(f"ballot {b.object_id!r}: {exc}")
                report.failed_ballots.append(repr(b.object_id))
        report.codes = b"".join(code_prefix(b.code) for b in ballots)
        if self.context.manifest_hash == self.internal.manifest_hash:
            group = proof_group(ballots, workers)
            failures = validate_ballots(ballots, self.internal, self.context, group, workers)
            report.problems += [f.message for f in failures]
            report.failed_ballots += [f.ballot_id for f in failures]
        report.prefixes = b"".join(fp[:PREFIX_BYTES] for b in ballots for fp in selection_fingerprints(b))
        cast: list[SubmittedBallot] = []
        spoiled: list[SubmittedBallot] = []
        for b in ballots:
            state = getattr(b.state, "name", str(b.state))
            (cast if state == "CAST" else spoiled if state == "SPOILED" else []).append(b)
        report.cast, report.spoiled = len(cast), len(spoiled)
        products = new_tally(self.internal)
        try:
            accumulate(products, cast)
        except TallyError as e:
            report.problems.append(f"encrypted tally: {e}")
        report.products = {
            (cid, sid): (sel.ciphertext.pad, sel.ciphertext.data)
            for cid, c in products.contests.items()
            for sid, sel in c.selections.items()
        }
        for b in spoiled:
            plain = decryptions.get(b.object_id)
            if plain is None:
                report.problems.append(f"spoiled ballot {b.object_id}: no decryption in spoiled_ballots/")
                report.failed_ballots.append(b.object_id)
                continue
            cts = {
                (c.object_id, s.object_id): s.ciphertext
                for c in b.contests
                for s in c.ballot_selections
                if (c.object_id, s.object_id) in self.described
            }
            self.shares.plaintext(f"spoiled ballot {b.object_id}", plain, cts)
        for ballot_id in sorted(set(decryptions) - {b.object_id for b in spoiled}):
            report.problems.append(
                f"spoiled ballot {ballot_id}: decrypted but not a spoiled submitted ballot"
            )
        share_problems = self.shares.drain(self.context.crypto_extended_base_hash)
        report.problems += share_problems
        if share_problems:
            report.failed_ballots += sorted(
                {
                    b.object_id
                    for b in spoiled
                    if any(f"spoiled ballot {b.object_id}/" in p for p in share_problems)
                }
            )
        report.available_sets, self.shares.available_sets = self.shares.available_sets, set()
        return report

    def check_tally(self) -> ChunkReport:
        """The decrypted tally's shares (against the encrypted tally's ciphertexts)."""
        report = ChunkReport()
        enc, tally = self.header.encrypted_tally, self.header.tally
        if enc is None or tally is None:
            return report
        cts = {(cid, s.object_id): s.ciphertext for cid, s in enc.selections()}
        self.shares.plaintext(f"tally {tally.object_id}", tally, cts)
        report.problems = self.shares.drain(self.context.crypto_extended_base_hash)
        report.available_sets, self.shares.available_sets = self.shares.available_sets, set()
        return report

    def repeats(self, prefixes: set[bytes], ballots: Iterable[SubmittedBallot]) -> list[str]:
        """The exact repeat messages, from the ballots whose fingerprints start with ``prefixes``."""
        suspects = []
        for b in ballots:
            fps = selection_fingerprints(b)
            if any(fp[:PREFIX_BYTES] in prefixes for fp in fps):
                suspects.append((b.object_id, fps))
        return [repeat_message(b, original) for b, original in repeats_among(suspects)]

    def shared_codes(self, prefixes: set[bytes], ballots: Iterable[SubmittedBallot]) -> list[str]:
        """Each pair of ballots sharing a tracking code, from the ballots whose code starts with
        ``prefixes`` (a code names one ballot to its voter: two ballots under one code make the
        receipt meaningless)."""
        first: dict[mpz, str] = {}
        problems = []
        for b in ballots:
            if code_prefix(b.code) not in prefixes:
                continue
            if b.code in first:
                problems.append(
                    f"ballots {first[b.code]} and {b.object_id} share the tracking code {to_hex(b.code)}"
                )
            else:
                first[b.code] = b.object_id
        return problems

    def finish(
        self,
        totals: Totals,
        stray_decryptions: Iterable[str],
        ballots_again: Callable[[], Iterable[SubmittedBallot]],
        complete: bool = True,
    ) -> list[str]:
        """What needs every batch: the clone check, the encrypted tally against the cast products, the
        coefficients; ``stray_decryptions``: ids in spoiled_ballots/ of no submitted ballot; ``complete``:
        whether every chunk was checked."""
        problems = []
        if repeated := totals.repeated_prefixes():
            problems += self.repeats(repeated, ballots_again())
        if shared := totals.repeated_codes():
            problems += self.shared_codes(shared, ballots_again())
        enc = self.header.encrypted_tally
        if enc is None:
            problems.append("encrypted_tally.json: missing")
        elif complete:  # with chunks unchecked, the cast products are partial: no comparison to make
            expected = new_tally(self.internal, enc.object_id)
            for cid, contest in expected.contests.items():
                got = enc.contests.get(cid)
                for sid, sel in contest.selections.items():
                    if (cid, sid) in totals.products:
                        sel.ciphertext = Ciphertext(*totals.products[(cid, sid)])
                    g = None if got is None else got.selections.get(sid)
                    if (
                        g is None
                        or g.ciphertext != sel.ciphertext
                        or g.description_hash != sel.description_hash
                    ):
                        problems.append(
                            f"encrypted tally/{cid}/{sid}: not the product of the {totals.cast} cast ballots"
                        )
            if set(enc.contests) != set(expected.contests):
                problems.append("encrypted tally: contests differ from the manifest's")
        if enc is not None and self.header.tally is None:
            problems.append("tally.json: missing")
        for ballot_id in sorted(stray_decryptions):
            problems.append(f"spoiled ballot {ballot_id}: decrypted but not a spoiled submitted ballot")
        coefficients = self.header.lagrange_coefficients
        if coefficients and len(totals.available_sets) == 1:
            (ids,) = totals.available_sets
            if self.shares.lagrange(ids) != coefficients:
                problems.append("coefficients.json: not the Lagrange coefficients of the available guardians")
        return problems


def verify_record(record: ElectionRecord, workers: int = 1) -> list[str]:
    """All problems found in a record held in memory (empty when it verifies)."""
    check = RecordCheck(record)
    summary = Summary(check)
    summary.add(HEADER_POSITION, ChunkReport(problems=check.header_problems()), chunk=False)
    ballots = record.submitted_ballots
    for i in range(0, len(ballots), BATCH):
        part = ballots[i : i + BATCH]
        decryptions = {
            b.object_id: record.spoiled_ballots[b.object_id]
            for b in part
            if b.object_id in record.spoiled_ballots
        }
        summary.add(1 + i // BATCH, check.check_ballots(part, decryptions, workers))
    summary.add(2 + len(ballots) // BATCH, check.check_tally(), chunk=False)
    stray = set(record.spoiled_ballots) - {b.object_id for b in ballots}
    summary.close(stray, lambda: ballots)
    return summary.problems


# --- the closing: the units' reports added up, the same for every driver ---

HEADER_POSITION = 0  # where the header's problems (guardians, context, layout) go among the units'


@dataclass(frozen=True)
class FailedChunk:
    """A unit that could not be checked: its task failed at every attempt."""

    chunk: str  # Unit.describe(): "chunk N (ballots ..)", or "the tally's shares"
    error: str  # "<ExceptionType>: <first line>"


class Summary:
    """The closing of a verification, one for all three drivers (``verify_source`` in process,
    ``bridge.verify.verify_on_ray`` and the VERIFY job's finalizer ``service.jobs.verification``): each
    unit's ``ChunkReport`` added as it lands (``add``, in any order) or its failure (``fail``), then the
    checks that need them all (``close``: ``RecordCheck.finish``).

    ``position`` orders a unit's problems among the others' whatever order they land in; the counts are
    complete and, with ``listed``, only the first ``listed`` problems, failed ballots and named units are
    kept (the job's verdict). What stays across units is ``Totals`` and the listed problems."""

    def __init__(self, check: RecordCheck, listed: int | None = None) -> None:
        self.check = check
        self.listed = listed
        self.totals = Totals()
        self.problem_count = 0
        self.failed_ballot_count = 0
        self.chunks = 0  # ballot chunks reported
        # position -> (its problems, its failed ballots, its name when it has problems), each cut to listed
        self._units: dict[int, tuple[list[str], list[str], str | None]] = {}
        self._failed: dict[int, FailedChunk] = {}
        self._final: list[str] = []

    def _new(self, position: int) -> None:
        if position in self._units or position in self._failed:  # one would hide the other's problems
            raise ValueError(f"verification unit at position {position} reported twice")

    def _cut(self, items: list[str]) -> list[str]:
        return items if self.listed is None else items[: self.listed]

    def add(self, position: int, report: ChunkReport, name: str | None = None, chunk: bool = True) -> None:
        """One unit's report; ``name`` is listed in ``chunks_with_problems`` when it has problems."""
        self._new(position)
        problems, failed = report.problems, report.failed_ballots
        report.problems, report.failed_ballots = [], []  # counted and listed here: Totals keeps the rest
        self.totals.add(report)
        self.problem_count += len(problems)
        self.failed_ballot_count += len(failed)
        self.chunks += chunk
        self._units[position] = (self._cut(problems), self._cut(failed), name if problems else None)

    def fail(self, position: int, failed: FailedChunk) -> None:
        """A unit not checked: it is named, and the comparisons that need every unit are not made."""
        self._new(position)
        self._failed[position] = failed

    def close(
        self,
        stray_decryptions: Iterable[str],
        ballots_again: Callable[[], Iterable[SubmittedBallot]],
        more: Callable[[], list[str]] = list,
    ) -> None:
        """``RecordCheck.finish`` on the totals (and ``more``'s problems after it)."""
        final = self.check.finish(self.totals, stray_decryptions, ballots_again, complete=not self._failed)
        final += more()
        self.problem_count += len(final)
        self._final = final

    def _listed(self, lists: Iterable[list[str]]) -> list[str]:
        out: list[str] = []
        for items in lists:
            out += items
            if self.listed is not None and len(out) >= self.listed:
                return out[: self.listed]
        return out

    @property
    def problems(self) -> list[str]:
        """The units' problems in position order, then those of the closing."""
        return self._listed([*(self._units[p][0] for p in sorted(self._units)), self._final])

    @property
    def failed_ballots(self) -> list[str]:
        return self._listed([self._units[p][1] for p in sorted(self._units)])

    @property
    def chunks_with_problems(self) -> list[str]:
        names = [self._units[p][2] for p in sorted(self._units)]
        return self._listed([[n] for n in names if n is not None])

    @property
    def failed(self) -> list[FailedChunk]:
        return [self._failed[p] for p in sorted(self._failed)]

    def outcome(self, chunks: int) -> Outcome:
        """What ``record verify`` prints: ``chunks``, the chunks of its plan."""
        t = self.totals
        return Outcome(
            t.ballots,  # the ballots checked: a chunk not checked is in failed_chunks instead
            t.cast,
            t.spoiled,
            len(self.check.header.guardians),
            chunks,
            self.problems,
            self.chunks_with_problems,
            self.failed,
            sorted(set(self.failed_ballots)),
        )


# --- a record read from its files, a chunk at a time ---


@dataclass(frozen=True)
class Chunk:
    """Some ballots of a record, by id, numbered from 1, with the ids of those that have a file in
    spoiled_ballots/."""

    number: int
    ids: list[str]
    decrypted: frozenset[str]

    def describe(self) -> str:
        return f"chunk {self.number} (ballots {self.ids[0]} .. {self.ids[-1]}, {len(self.ids)} ballots)"


@dataclass(frozen=True)
class Unit:
    """One verification unit of a record: a chunk of its ballots, or (``chunk`` None) the tally's shares.
    ``position`` orders its problems in the verdict: the header's first (``HEADER_POSITION``), then the
    chunks in order, then the tally's shares."""

    position: int
    chunk: Chunk | None

    def describe(self) -> str:
        return "the tally's shares" if self.chunk is None else self.chunk.describe()

    @property
    def ballots(self) -> int:
        return 0 if self.chunk is None else len(self.chunk.ids)


@dataclass(frozen=True)
class Plan:
    chunks: list[Chunk]
    ballots: int
    stray_decryptions: list[str]  # ballot ids in spoiled_ballots/ with no file in submitted_ballots/
    layout: list[str] = field(default_factory=list)  # entries that are none of the record's files

    def units(self) -> list[Unit]:
        """Every unit to check: the chunks, then the tally's shares (every driver checks these)."""
        return [Unit(c.number, c) for c in self.chunks] + [Unit(len(self.chunks) + 1, None)]


def plan_chunks(source: RecordSource, size: int) -> Plan:
    """The record's ballots cut in ``size``-ballot chunks, in id order (ids only, no file is read), and a
    problem for every entry of the record that maps to none of its files."""
    layout = layout_problems(source)
    ids = source.ids(SUBMITTED_BALLOTS_DIR, SUBMITTED_BALLOT_PREFIX)
    decrypted = source.ids(SPOILED_BALLOTS_DIR, SPOILED_BALLOT_PREFIX)
    stray = [
        i for i in decrypted if not source.exists(member(SUBMITTED_BALLOTS_DIR, SUBMITTED_BALLOT_PREFIX, i))
    ]
    chunks: list[Chunk] = []
    todo = set(decrypted)  # spoiled ballots are few: their ids are kept
    for i in range(0, len(ids), size):
        part = ids[i : i + size]
        chunks.append(Chunk(len(chunks) + 1, part, frozenset(x for x in part if x in todo)))
    return Plan(chunks, len(ids), stray, layout)


def load_chunk(source: RecordSource, chunk: Chunk) -> list[tuple[str, bytes, bytes | None]]:
    """The chunk's files: (ballot file name, its bytes, the bytes of its decryption or None)."""
    items = []
    for i in chunk.ids:
        name = member(SUBMITTED_BALLOTS_DIR, SUBMITTED_BALLOT_PREFIX, i)
        decryption = (
            source.read_bytes(member(SPOILED_BALLOTS_DIR, SPOILED_BALLOT_PREFIX, i))
            if i in chunk.decrypted
            else None
        )
        items.append((name, source.read_bytes(name), decryption))
    return items


def parse_ballots(
    items: Iterable[tuple[str, bytes, bytes | None]],
) -> tuple[list[SubmittedBallot], dict[str, PlaintextTally], list[str]]:
    """The ballots and decryptions of raw files, and a problem for each file that does not parse."""
    ballots: list[SubmittedBallot] = []
    decryptions: dict[str, PlaintextTally] = {}
    problems: list[str] = []
    for name, raw, raw_decryption in items:
        try:
            b = SubmittedBallot.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as e:
            problems.append(f"{name}: not a submitted ballot: {type(e).__name__}: {e}")
            continue
        if b.object_id != ballot_id_of(name, SUBMITTED_BALLOT_PREFIX):
            problems.append(f"{name}: holds ballot {b.object_id}, not the one its name gives")
        ballots.append(b)
        if raw_decryption is not None:
            try:
                d = PlaintextTally.from_json(json.loads(raw_decryption))
            except (ValueError, KeyError, TypeError) as e:
                problems.append(
                    f"spoiled ballot {b.object_id}: decryption unreadable: {type(e).__name__}: {e}"
                )
                continue
            decryptions[d.object_id] = d
    return ballots, decryptions, problems


def check_chunk(
    check: RecordCheck, items: Sequence[tuple[str, bytes, bytes | None]], workers: int = 1
) -> ChunkReport:
    """``RecordCheck.check_ballots`` on raw files (``load_chunk``): what one Ray task runs."""
    ballots, decryptions, problems = parse_ballots(items)
    report = check.check_ballots(ballots, decryptions, workers)
    report.ballots = len(items)
    report.problems[:0] = problems
    report.failed_ballots[:0] = [p.split(":", 1)[0] for p in problems]
    return report


def ballots_again(source: RecordSource, plan: Plan) -> Iterator[SubmittedBallot]:
    """Every ballot of the record again, a chunk at a time (only when a fingerprint prefix repeats)."""
    for chunk in plan.chunks:
        names = [member(SUBMITTED_BALLOTS_DIR, SUBMITTED_BALLOT_PREFIX, i) for i in chunk.ids]
        yield from parse_ballots((n, source.read_bytes(n), None) for n in names)[0]


Progress = Callable[[int, int], None]  # (ballots checked, ballots in all)


@dataclass
class Outcome:
    ballots: int
    cast: int
    spoiled: int
    guardians: int
    chunks: int
    problems: list[str]
    chunks_with_problems: list[str]  # Chunk.describe() of each chunk that reported a problem
    failed_chunks: list[FailedChunk] = field(default_factory=list)  # units not checked (their task failed)
    failed_ballots: list[str] = field(default_factory=list)  # ballots (or files) a problem names, sorted


def start(check: RecordCheck, plan: Plan) -> Summary:
    """The closing of a record's verification, with what the driver itself checks first: the entries that
    are none of the record's files and the header (guardians, context)."""
    summary = Summary(check)
    summary.add(HEADER_POSITION, ChunkReport(problems=plan.layout + check.header_problems()), chunk=False)
    return summary


def load_unit(source: RecordSource, unit: Unit) -> list[tuple[str, bytes, bytes | None]]:
    """The files a unit's check reads besides the header (none for the tally's shares)."""
    return [] if unit.chunk is None else load_chunk(source, unit.chunk)


def check_unit(
    check: RecordCheck, unit: Unit, items: Sequence[tuple[str, bytes, bytes | None]], workers: int = 1
) -> ChunkReport:
    """One unit's check, wherever it runs (this process, or a Ray task)."""
    return check.check_tally() if unit.chunk is None else check_chunk(check, items, workers)


def add_report(summary: Summary, unit: Unit, report: ChunkReport) -> None:
    """A unit's report into the closing: a chunk with problems is named, the tally's shares are not."""
    chunk = unit.chunk is not None
    summary.add(unit.position, report, unit.describe() if chunk else None, chunk=chunk)


def verify_source(
    source: RecordSource, batch: int | None = None, workers: int = 1, progress: Progress | None = None
) -> Outcome:
    """Verify a record from its files in this process, one unit of ``batch`` ballots at a time (the units
    and the closing of ``bridge.verify.verify_on_ray``; a unit that raises stops it); ``batch`` None:
    ``unit_ballots`` of the record's manifest."""
    check = RecordCheck(read_header(source))
    plan = plan_chunks(source, batch or unit_ballots(check.internal))
    summary = start(check, plan)
    done = 0
    for unit in plan.units():
        add_report(summary, unit, check_unit(check, unit, load_unit(source, unit), workers))
        done += unit.ballots
        if progress is not None and unit.chunk is not None:
            progress(done, plan.ballots)
    summary.close(plan.stray_decryptions, lambda: ballots_again(source, plan))
    return summary.outcome(len(plan.chunks))
