"""Validation of submitted ballots against the manifest and the election context.

What is checked (everything the reference's ``ballot_is_valid_for_election(..., should_validate=True)``
checks, plus a few stricter structure checks):

- the ballot's manifest hash; its style exists; it holds exactly the style's contests (the reference
  ignores extra contests; we reject them), each with the manifest's contest description hash, exactly
  the description's selections plus the placeholders (the reference only counts them; we also check
  their ids and sequence orders), each with its selection description hash;
- each contest's constant proof proves the contest's ``number_elected`` (the reference accepts a proof
  of whatever constant it states; we reject another constant);
- every crypto hash (selection, contest, ballot) recomputed;
- the tracking code chains: code = H(code_seed, timestamp, crypto_hash), as the reference's encryptor
  makes it (its validator does not check it); uniqueness in an election is the service's unique index;
- every proof's ``usage`` is the reference's string for it, and each selection's placeholder flag is the
  manifest's (no hash covers either: otherwise free channels on a cast ballot);
- every contest's stated ciphertext accumulation equals the product of its selections;
- every selection's disjunctive Chaum-Pedersen proof and every contest's constant proof: ranges of
  challenges and responses, the Fiat-Shamir challenge hash, the verification equations;
- group membership of every element mod p (ciphertexts, proof commitments) and of the election key.

Soundness of the batched checks
-------------------------------
The group: p - 1 = 2 q R with q (256 bits) and R (3840 bits) prime, so Z_p^* = C_2 x C_R x C_q.

1. Every element x of a ballot must satisfy 0 < x < p and Jacobi(x, p) = 1. This puts x in the subgroup
   QR of order R q, removing the C_2 part. The range is checked per element; the symbol per element where
   batches are small, else per bucket of the low windows of the batch's one multi-exponentiation (steps 2
   and 3), where each element's low 64 bits are its own uniform weight (r_j for a commitment, s_i q plus
   the rest for alpha and beta): a non-residue then passes with probability at most 2^-64
   (``compute.multiexp.multiexp_residues``, docs/batch-verification.md#jacobi-symbols-by-bucket).
2. Subgroup test for the selection ciphertexts (alpha, beta): with independent uniform s_i < 2^64,
   y = prod x_i^s_i and we require y^q = 1. Write x_i = u_i w_i (u_i in C_R, w_i in C_q); y^q = 1 iff
   prod u_i^s_i = 1 because q is invertible mod R. If some u_j != 1 it has order R, and for any fixed
   other s at most one residue of s_j mod R satisfies the equation; s_j takes 2^64 < R values, so the
   test passes with probability <= 2^-64. ``ProofBatch.check`` folds it into step 3's product as the
   terms x_i^(s_i q) (x_i^(e_i mod q + s_i q): the same argument on the product's C_R part, and once every
   u_i is 1 the reduction mod q is exact and these terms are 1; docs/batch-verification.md).
3. Proof equations: every equation has the form D = 1 with D = rhs / lhs in QR (all its factors are).
   We draw independent r_j < 2^64 and require prod D_j^r_j = 1, computed as one multi-exponentiation
   (bases: commitments a, b and ciphertexts alpha, beta; g and K through fixed-base tables). Projecting
   on C_R and on C_q (both prime order > 2^64), the same argument shows a batch with some D_j != 1 passes
   with probability <= 2^-64. The exponents of alpha and beta are reduced mod q, which is exact once step 2
   has shown them to lie in C_q; commitments get unreduced 64-bit exponents. A contest's accumulation
   A = prod alpha_s is never exponentiated: A^(t c) is folded into each alpha_s's exponent.
4. Subgroup membership of the commitments then follows without testing them: once the equations hold
   exactly, a0 = g^v0 alpha^-c0, b0 = K^v0 beta^-c0, a1 = g^v1 alpha^-c1, b1 = g^c1 K^v1 beta^-c1
   (and a, b of the constant proof likewise) are products of elements of C_q.

5. Which checks could go, and why none does. A check can be dropped only where an *exact* relation
   already forces the element into C_q; the random linear combination is not exact on C_2. An element
   twisted by -1 (x -> p - x, its order-2 component) makes its equation fail by exactly -1, and the
   batch's C_2 projection is (-1)^(sum r_j e_j): a single twist survives with probability 1/2, and with
   odd weights and one Jacobi symbol of the product two twists cancel and always survive. So every element
   needs its own Jacobi symbol (26 us, about 7 multiplies), or a bucket of its own random weight's digits
   in every window (step 1), and none has an exact relation here: each
   commitment enters one equation, checked only in the combination; alpha and beta enter several, none
   exactly. Likewise each equation needs its own weight (a0 g^k and b0 g^-k cancel under a shared one) and
   each ciphertext element its own subgroup weight (an order-R u in one pad and u^-1 in another cancel in
   the contest's accumulation). Per selection: 6 Jacobi symbols, 4 commitment terms (64-bit), 2 terms for
   alpha, beta (256-bit), 2 subgroup terms (64-bit); ``tests/compute/test_proofs.py`` has a forged proof
   for each check that only that check rejects (``docs/batch-verification.md``).

So a batch containing any invalid ballot passes with probability at most 2^-62 (union of steps 1 to 3),
with fresh randomness on each call. A failing batch is bisected (each half re-checked with new
randomness) down to single ballots, and a failing single ballot is searched proof by proof, so every
bad ballot is reported with its contest and selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import gmpy2
from gmpy2 import mpz

from compute.ballot import (
    CiphertextBallot,
    CiphertextBallotContest,
    SubmittedBallot,
    contest_crypto_hash,
    get_ballot_code,
    selection_crypto_hash,
)
from compute.constants import ONE, P, Q
from compute.context import ElectionContext
from compute.elgamal import Ciphertext
from compute.manifest import InternalManifest
from compute.parallel import thread_map
from compute.selection_proofs import (
    SELECTION_LIMIT_USAGE,
    SELECTION_VALUE_USAGE,
    ConstantChaumPedersenProof,
    DisjunctiveChaumPedersenProof,
    ProofBatch,
)

AnyBallot = SubmittedBallot | CiphertextBallot

# Selections per proof batch in the tally chunk task (bridge/tasks/tally.py), which streams its ballots: the
# batch's multi-exponentiation costs about 132 multiplies per selection at 1,200 selections (the tally's
# database pages of about 120 ten-selection ballots), 97 at 10,000, 85 at 30,000 and 82 at 40,000
# (``compute.multiexp.multiplies``; ``docs/batch-verification.md#batch-sizes-and-windows``). 30,000 is a
# default chunk (2,500 ballots) of 12 selections. Memory bound: a process validating and accumulating a
# chunk grew 5.1 KiB a selection of the batch (peak RSS 192 MiB at 10,000, 293 MiB at 30,000), about 150
# MiB beside the task's own at 30,000; ``Settings.task_memory_mb`` declares the whole task's peak.
VALIDATION_BATCH_SELECTIONS = 30_000


def selection_count(ballot: AnyBallot) -> int:
    """How many selection proofs a ballot brings to a batch (placeholders included)."""
    return sum(len(c.ballot_selections) for c in ballot.contests)


class BallotInvalid(ValueError):
    """A ballot failed validation; the message names the ballot, and the contest and selection if any."""

    def __init__(
        self, ballot_id: str, reason: str, contest_id: str | None = None, selection_id: str | None = None
    ):
        self.ballot_id = ballot_id
        self.contest_id = contest_id
        self.selection_id = selection_id
        self.reason = reason
        where = f"ballot {ballot_id}"
        if contest_id is not None:
            where += f", contest {contest_id}"
        if selection_id is not None:
            where += f", selection {selection_id}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(
        self,
    ) -> tuple[type[BallotInvalid], tuple[str, str, str | None, str | None], dict[str, object]]:
        # Unpickling (Ray hands a task's exception to the driver this way) calls cls(*self.args), and
        # args holds only the message: without this the exception could not be rebuilt at all.
        return type(self), (self.ballot_id, self.reason, self.contest_id, self.selection_id), self.__dict__


@dataclass(frozen=True, slots=True)
class BallotFailure:
    ballot_id: str
    reason: str
    contest_id: str | None = None
    selection_id: str | None = None

    @property
    def message(self) -> str:
        return str(BallotInvalid(self.ballot_id, self.reason, self.contest_id, self.selection_id))

    @classmethod
    def of(cls, e: BallotInvalid) -> BallotFailure:
        return cls(e.ballot_id, e.reason, e.contest_id, e.selection_id)


@dataclass(slots=True)
class _Prepared:
    """A ballot that passed the structural checks: what its proofs need, for (re)batching."""

    ballot_id: str
    # (contest id, selection id, ciphertext, proof)
    selections: list[tuple[str, str, Ciphertext, DisjunctiveChaumPedersenProof]] = field(default_factory=list)
    # (contest id, selection ciphertexts, accumulation, proof)
    contests: list[tuple[str, list[Ciphertext], Ciphertext, ConstantChaumPedersenProof]] = field(
        default_factory=list
    )

    def add_to(self, batch: ProofBatch) -> None:
        for _, _, ct, proof in self.selections:
            batch.add_disjunctive(ct, proof, prechecked=True)
        for _, cts, acc, contest_proof in self.contests:
            batch.add_constant(cts, acc, contest_proof, prechecked=True)


@lru_cache(maxsize=16)
def _key_ok(k: mpz) -> bool:
    return 1 < k < P and gmpy2.powmod(k, Q, P) == ONE


def check_context(context: ElectionContext) -> None:
    if not _key_ok(context.elgamal_public_key):
        raise ValueError("the election public key is not an element of the order-q subgroup")


def _product(cts: Sequence[Ciphertext]) -> Ciphertext:
    pad, data = ONE, ONE
    for c in cts:
        pad = pad * c.pad % P
        data = data * c.data % P
    return Ciphertext(pad, data)


def _prepare_contest(
    bid: str, contest: CiphertextBallotContest, internal: InternalManifest, batch: ProofBatch, out: _Prepared
) -> None:
    cid = contest.object_id
    desc = internal.contest_for(cid)
    if desc is None:
        raise BallotInvalid(bid, "contest not in the manifest", cid)
    if contest.description_hash != desc.description_hash:
        raise BallotInvalid(bid, "contest description hash does not match the manifest", cid)
    if contest.sequence_order != desc.sequence_order:
        raise BallotInvalid(bid, "contest sequence order does not match the manifest", cid)
    expected = {s.object_id: s for s in (*desc.ballot_selections, *desc.placeholder_selections)}
    if len(contest.ballot_selections) != len(expected):
        raise BallotInvalid(
            bid,
            f"{len(contest.ballot_selections)} selections, the style needs {len(expected)} with placeholders",
            cid,
        )
    placeholders = {d.object_id for d in desc.placeholder_selections}
    seen: set[str] = set()
    for s in contest.ballot_selections:
        sid = s.object_id
        d = expected.get(sid)
        if d is None or sid in seen:
            raise BallotInvalid(bid, "unknown or repeated selection", cid, sid)
        seen.add(sid)
        if s.description_hash != internal.selection_hashes[(cid, sid)]:
            raise BallotInvalid(bid, "selection description hash does not match the manifest", cid, sid)
        if s.sequence_order != d.sequence_order:
            raise BallotInvalid(bid, "selection sequence order does not match the manifest", cid, sid)
        if s.crypto_hash != selection_crypto_hash(sid, s.description_hash, s.ciphertext):
            raise BallotInvalid(bid, "selection crypto hash mismatch", cid, sid)
        if s.is_placeholder_selection != (sid in placeholders):
            raise BallotInvalid(bid, "placeholder flag does not match the manifest", cid, sid)
        if s.proof is None:
            raise BallotInvalid(bid, "selection has no proof", cid, sid)
        if s.proof.usage != SELECTION_VALUE_USAGE:
            raise BallotInvalid(bid, f"proof usage is not {SELECTION_VALUE_USAGE!r}", cid, sid)
        err = batch.precheck_disjunctive(s.ciphertext, s.proof)
        if err:
            raise BallotInvalid(bid, f"selection proof: {err}", cid, sid)
        out.selections.append((cid, sid, s.ciphertext, s.proof))
    if contest.crypto_hash != contest_crypto_hash(cid, contest.ballot_selections, contest.description_hash):
        raise BallotInvalid(bid, "contest crypto hash mismatch", cid)
    if contest.proof is None:
        raise BallotInvalid(bid, "contest has no proof", cid)
    if contest.proof.usage != SELECTION_LIMIT_USAGE:
        raise BallotInvalid(bid, f"proof usage is not {SELECTION_LIMIT_USAGE!r}", cid)
    cts = [s.ciphertext for s in contest.ballot_selections]
    acc = _product(cts)
    if acc != contest.ciphertext_accumulation:
        raise BallotInvalid(bid, "ciphertext accumulation is not the product of the selections", cid)
    if contest.proof.constant != desc.number_elected:
        # the reference proves the constant stated in the proof; a different limit is not this contest's
        raise BallotInvalid(bid, "constant proof is not for the contest's number elected", cid)
    err = batch.precheck_constant(acc, contest.proof)
    if err:
        raise BallotInvalid(bid, f"contest proof: {err}", cid)
    out.contests.append((cid, cts, acc, contest.proof))


def _prepare(ballot: AnyBallot, internal: InternalManifest, batch: ProofBatch) -> _Prepared:
    """Every check that needs no exponentiation; raises BallotInvalid naming the culprit."""
    bid = ballot.object_id
    if ballot.manifest_hash != internal.manifest_hash:
        raise BallotInvalid(bid, "manifest hash does not match the election's")
    try:
        wanted = internal.get_contests_for(ballot.style_id)
    except KeyError:
        raise BallotInvalid(bid, f"unknown ballot style {ballot.style_id!r}") from None
    wanted_ids = [c.object_id for c in wanted]
    have_ids = [c.object_id for c in ballot.contests]
    if sorted(have_ids) != sorted(wanted_ids):
        missing = sorted(set(wanted_ids) - set(have_ids))
        extra = sorted(set(have_ids) - set(wanted_ids))
        raise BallotInvalid(bid, f"contests do not match the style (missing {missing}, unexpected {extra})")
    out = _Prepared(bid)
    for contest in ballot.contests:
        _prepare_contest(bid, contest, internal, batch, out)
    # after the contests, so that a bad contest is reported as such rather than as a ballot hash
    if ballot.crypto_hash != ballot.crypto_hash_with(internal.manifest_hash):
        raise BallotInvalid(bid, "ballot crypto hash mismatch")
    # The receipt a voter keeps: unless it chains from the ballot's own hash, a valid ballot could carry
    # another voter's code (the reference's validator does not check this; its encryptor makes it so).
    if not ballot_code_ok(ballot):
        raise BallotInvalid(bid, "tracking code does not chain from its code seed, timestamp and crypto hash")
    return out


def _locate(prep: _Prepared, context: ElectionContext) -> BallotInvalid:
    """Name the first failing proof of a ballot whose batch failed (each proof checked on its own)."""
    k, qe = context.elgamal_public_key, context.crypto_extended_base_hash
    for cid, sid, ct, proof in prep.selections:
        b = ProofBatch(k, qe)
        err = b.precheck_disjunctive(ct, proof, residues=True)
        if err:
            return BallotInvalid(prep.ballot_id, f"selection proof: {err}", cid, sid)
        b.add_disjunctive(ct, proof, prechecked=True)
        if not b.check():
            return BallotInvalid(prep.ballot_id, "disjunctive proof (0 or 1) does not verify", cid, sid)
    for cid, cts, acc, contest_proof in prep.contests:
        b = ProofBatch(k, qe)
        err = b.precheck_constant(acc, contest_proof, residues=True)
        if err:
            return BallotInvalid(prep.ballot_id, f"contest proof: {err}", cid)
        b.add_constant(cts, acc, contest_proof, prechecked=True)
        if not b.check():
            return BallotInvalid(prep.ballot_id, "constant proof (contest limit) does not verify", cid)
    # every proof holds alone but not together: only possible by a 2^-64 accident; recheck the whole
    b = ProofBatch(k, qe)
    prep.add_to(b)
    if b.check():
        raise _Flake()
    return BallotInvalid(prep.ballot_id, "proofs do not verify together")


class _Flake(Exception):
    """A batch failed but its parts all pass: randomness, not the ballot (never expected to happen)."""


def validate_ballot(ballot: AnyBallot, internal_manifest: InternalManifest, context: ElectionContext) -> None:
    """Validate one ballot; raises BallotInvalid naming the ballot, contest and selection at fault."""
    check_context(context)
    if context.manifest_hash != internal_manifest.manifest_hash:
        raise ValueError("the context is not for this manifest")
    batch = ProofBatch(context.elgamal_public_key, context.crypto_extended_base_hash)
    prep = _prepare(ballot, internal_manifest, batch)
    prep.add_to(batch)
    if not batch.check():
        try:
            raise _locate(prep, context)
        except _Flake:
            validate_ballot(ballot, internal_manifest, context)


def _verify_group(preps: list[_Prepared], context: ElectionContext) -> list[BallotFailure]:
    """Check the proofs of ``preps`` in one batch; bisect on failure to name every bad ballot."""
    if not preps:
        return []
    batch = ProofBatch(context.elgamal_public_key, context.crypto_extended_base_hash)
    for p in preps:
        p.add_to(batch)
    if batch.check():
        return []
    if len(preps) == 1:
        try:
            return [BallotFailure.of(_locate(preps[0], context))]
        except _Flake:
            return _verify_group(preps, context)
    mid = len(preps) // 2
    return _verify_group(preps[:mid], context) + _verify_group(preps[mid:], context)


def validate_ballots(
    ballots: Sequence[AnyBallot],
    internal_manifest: InternalManifest,
    context: ElectionContext,
    batch_size: int = 1024,
    workers: int = 1,
) -> list[BallotFailure]:
    """Validate many ballots; returns one failure per invalid ballot (empty if all are valid).

    Proofs are checked in batches of ``batch_size`` ballots (one multi-exponentiation each); with
    ``workers`` > 1 batches run in threads (gmpy2 releases the GIL in long exponentiations). Larger
    batches cost fewer multiplies per selection (wider Pippenger windows: about 120 at 256 ballots of
    10 selections, 98 at 1,024, 82 at 4,096; ``compute.multiexp.multiplies``) for a bucket table of
    2^c elements (1 MiB at 1,024 ballots) beside the ballots themselves, which the caller holds anyway.
    """
    check_context(context)
    if context.manifest_hash != internal_manifest.manifest_hash:
        raise ValueError("the context is not for this manifest")
    failures: list[BallotFailure] = []
    preps: list[_Prepared] = []
    batch = ProofBatch(context.elgamal_public_key, context.crypto_extended_base_hash)  # for prechecks only
    for b in ballots:
        try:
            preps.append(_prepare(b, internal_manifest, batch))
        except BallotInvalid as e:
            failures.append(BallotFailure.of(e))
    groups = [preps[i : i + batch_size] for i in range(0, len(preps), batch_size)]
    for res in thread_map(lambda g: _verify_group(g, context), groups, workers):
        failures += res
    order = {b.object_id: i for i, b in enumerate(ballots)}
    failures.sort(key=lambda f: order.get(f.ballot_id, 0))
    return failures


def ballot_code_ok(ballot: AnyBallot) -> bool:
    """Whether the ballot's code is the reference's ``get_ballot_code(code_seed, timestamp, crypto_hash)``."""
    return ballot.code == get_ballot_code(ballot.code_seed, ballot.timestamp, ballot.crypto_hash)
