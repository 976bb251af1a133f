"""Partial, compensated and combined decryption, with the reference's share and plaintext layouts
(``electionguard.decryption``, ``decryption_share``, ``decrypt_with_shares`` and ``tally``).

What gets decrypted is a *target*: a CiphertextTally (contests -> selections) or a submitted ballot
(contests -> ballot_selections, placeholders included, as the reference's ballot shares are). A present
guardian's share of a selection is M_i = A^s_i with a Chaum-Pedersen proof against its key K_i. For a
missing guardian j each present guardian l gives M_{j,l} = A^P_j(l) with a proof against the recovery
key g^P_j(l) = prod_k K_{j,k}^(l^k), and M_j = prod_l M_{j,l}^w_l with Lagrange coefficients w_l.
Combining divides B by the product of all M_i and takes a small discrete log.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import gmpy2
from gmpy2 import mpz

from compute.chaum_pedersen import ChaumPedersenProof, ShareStatement, partial_decrypt, verify_shares
from compute.constants import ONE, G, P
from compute.context import ElectionContext
from compute.elgamal import Ciphertext
from compute.group import from_hex, g_pow_p, to_hex
from compute.guardian import (
    CompensationKey,
    DecryptionKey,
    ElectionKeyPair,
    ElectionPublicKey,
    GuardianRecord,
    PrivateGuardianRecord,
)
from compute.multiexp import multiexp
from compute.parallel import thread_map
from compute.polynomial import commitment_product, compute_lagrange_coefficient
from compute.tally import CiphertextTally


class DecryptionError(ValueError):
    """Carries ``problems``: one line per failing share, naming the guardian and the selection."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "; ".join(problems[:20]) + (f" (+{len(problems) - 20} more)" if len(problems) > 20 else "")
        )
        self.problems = problems


_T = TypeVar("_T")
_R = TypeVar("_R")


def product_of_powers(bases: Sequence[mpz], exponents: Sequence[int]) -> mpz:
    """prod b^e mod p: plain powmods for a handful of terms (a quorum), multi-exponentiation beyond."""
    if len(bases) >= 8:
        return multiexp(bases, exponents)
    acc = ONE
    for b, e in zip(bases, exponents, strict=True):
        acc = acc * gmpy2.powmod(b, e, P) % P
    return acc


# --- share layouts ------------------------------------------------------------------------------


@dataclass(slots=True)
class CiphertextCompensatedDecryptionSelection:
    object_id: str
    guardian_id: str  # the present guardian that made it
    missing_guardian_id: str
    share: mpz  # M_{j,l}
    recovery_key: mpz  # g^P_j(l)
    proof: ChaumPedersenProof

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "missing_guardian_id": self.missing_guardian_id,
            "share": to_hex(self.share),
            "recovery_key": to_hex(self.recovery_key),
            "proof": self.proof.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextCompensatedDecryptionSelection:
        return cls(
            d["object_id"],
            d["guardian_id"],
            d["missing_guardian_id"],
            from_hex(d["share"]),
            from_hex(d["recovery_key"]),
            ChaumPedersenProof.from_json(d["proof"]),
        )


@dataclass(slots=True)
class CiphertextDecryptionSelection:
    """A guardian's share of one selection: with a proof if it decrypted, with ``recovered_parts``
    (keyed by present guardian) if it was missing and its share was reconstructed."""

    object_id: str
    guardian_id: str
    share: mpz
    proof: ChaumPedersenProof | None = None
    recovered_parts: dict[str, CiphertextCompensatedDecryptionSelection] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "share": to_hex(self.share),
            "proof": None if self.proof is None else self.proof.to_json(),
            "recovered_parts": None
            if self.recovered_parts is None
            else {k: v.to_json() for k, v in self.recovered_parts.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextDecryptionSelection:
        parts = d.get("recovered_parts")
        return cls(
            d["object_id"],
            d["guardian_id"],
            from_hex(d["share"]),
            None if d.get("proof") is None else ChaumPedersenProof.from_json(d["proof"]),
            None
            if parts is None
            else {k: CiphertextCompensatedDecryptionSelection.from_json(v) for k, v in parts.items()},
        )


@dataclass(slots=True)
class CiphertextDecryptionContest:
    object_id: str
    guardian_id: str
    description_hash: mpz
    selections: dict[str, CiphertextDecryptionSelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "description_hash": to_hex(self.description_hash),
            "selections": {k: s.to_json() for k, s in self.selections.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextDecryptionContest:
        return cls(
            d["object_id"],
            d["guardian_id"],
            from_hex(d["description_hash"]),
            {k: CiphertextDecryptionSelection.from_json(s) for k, s in d["selections"].items()},
        )


@dataclass(slots=True)
class CiphertextCompensatedDecryptionContest:
    object_id: str
    guardian_id: str
    missing_guardian_id: str
    description_hash: mpz
    selections: dict[str, CiphertextCompensatedDecryptionSelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "missing_guardian_id": self.missing_guardian_id,
            "description_hash": to_hex(self.description_hash),
            "selections": {k: s.to_json() for k, s in self.selections.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextCompensatedDecryptionContest:
        return cls(
            d["object_id"],
            d["guardian_id"],
            d["missing_guardian_id"],
            from_hex(d["description_hash"]),
            {k: CiphertextCompensatedDecryptionSelection.from_json(s) for k, s in d["selections"].items()},
        )


@dataclass(slots=True)
class DecryptionShare:
    object_id: str  # the tally's or the ballot's id
    guardian_id: str
    public_key: mpz
    contests: dict[str, CiphertextDecryptionContest]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "public_key": to_hex(self.public_key),
            "contests": {k: c.to_json() for k, c in self.contests.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DecryptionShare:
        return cls(
            d["object_id"],
            d["guardian_id"],
            from_hex(d["public_key"]),
            {k: CiphertextDecryptionContest.from_json(c) for k, c in d["contests"].items()},
        )

    def selection(self, contest_id: str, selection_id: str) -> CiphertextDecryptionSelection | None:
        contest = self.contests.get(contest_id)
        return None if contest is None else contest.selections.get(selection_id)


@dataclass(slots=True)
class CompensatedDecryptionShare:
    object_id: str
    guardian_id: str  # present guardian
    missing_guardian_id: str
    public_key: mpz  # the present guardian's key, as the reference records it
    contests: dict[str, CiphertextCompensatedDecryptionContest]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "missing_guardian_id": self.missing_guardian_id,
            "public_key": to_hex(self.public_key),
            "contests": {k: c.to_json() for k, c in self.contests.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CompensatedDecryptionShare:
        return cls(
            d["object_id"],
            d["guardian_id"],
            d["missing_guardian_id"],
            from_hex(d["public_key"]),
            {k: CiphertextCompensatedDecryptionContest.from_json(c) for k, c in d["contests"].items()},
        )


# --- plaintext layouts --------------------------------------------------------------------------


@dataclass(slots=True)
class PlaintextTallySelection:
    object_id: str
    tally: int
    value: mpz  # g^tally
    message: Ciphertext
    shares: list[CiphertextDecryptionSelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "tally": self.tally,
            "value": to_hex(self.value),
            "message": self.message.to_json(),
            "shares": [s.to_json() for s in self.shares],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextTallySelection:
        return cls(
            d["object_id"],
            int(d["tally"]),
            from_hex(d["value"]),
            Ciphertext.from_json(d["message"]),
            [CiphertextDecryptionSelection.from_json(s) for s in d["shares"]],
        )


@dataclass(slots=True)
class PlaintextTallyContest:
    object_id: str
    selections: dict[str, PlaintextTallySelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "selections": {k: s.to_json() for k, s in self.selections.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextTallyContest:
        return cls(
            d["object_id"], {k: PlaintextTallySelection.from_json(s) for k, s in d["selections"].items()}
        )


@dataclass(slots=True)
class PlaintextTally:
    """tally.json, and each spoiled_ballot_<id>.json (the reference writes spoiled ballots this way)."""

    object_id: str
    contests: dict[str, PlaintextTallyContest]

    def to_json(self) -> dict[str, Any]:
        return {"object_id": self.object_id, "contests": {k: c.to_json() for k, c in self.contests.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextTally:
        return cls(d["object_id"], {k: PlaintextTallyContest.from_json(c) for k, c in d["contests"].items()})

    def counts(self) -> dict[str, dict[str, int]]:
        return {cid: {sid: s.tally for sid, s in c.selections.items()} for cid, c in self.contests.items()}


def merge_plaintexts(object_id: str, parts: Iterable[PlaintextTally]) -> PlaintextTally:
    """One plaintext from the plaintexts of disjoint slices of the same tally (selections decrypted in
    separate tasks); a selection that appears twice is an error, not overwritten."""
    contests: dict[str, PlaintextTallyContest] = {}
    for part in parts:
        for cid, contest in part.contests.items():
            into = contests.setdefault(cid, PlaintextTallyContest(cid, {}))
            for sid, sel in contest.selections.items():
                if sid in into.selections:
                    raise DecryptionError([f"{object_id}/{cid}/{sid}: decrypted in two slices"])
                into.selections[sid] = sel
    return PlaintextTally(object_id, contests)


# --- targets ------------------------------------------------------------------------------------


@dataclass(slots=True)
class TargetContest:
    object_id: str
    description_hash: mpz
    selections: list[tuple[str, Ciphertext]]


@dataclass(slots=True)
class Target:
    object_id: str
    contests: list[TargetContest]

    def items(self) -> list[tuple[str, str, Ciphertext]]:
        return [(c.object_id, sid, ct) for c in self.contests for sid, ct in c.selections]


def target_of(obj: CiphertextTally | Any) -> Target:
    """A tally, or a submitted ballot (reference field names: contests, ballot_selections, ciphertext)."""
    if isinstance(obj, Target):
        return obj
    if isinstance(obj, CiphertextTally):
        return Target(
            obj.object_id,
            [
                TargetContest(
                    c.object_id,
                    c.description_hash,
                    [(s.object_id, s.ciphertext) for s in c.selections.values()],
                )
                for c in obj.contests.values()
            ],
        )
    return Target(
        obj.object_id,
        [
            TargetContest(
                c.object_id, c.description_hash, [(s.object_id, s.ciphertext) for s in c.ballot_selections]
            )
            for c in obj.contests
        ],
    )


# --- making shares ------------------------------------------------------------------------------


def _partial_decryptions(
    targets: Sequence[Target], secret: mpz, q_hash: mpz, workers: int | None
) -> list[list[list[tuple[mpz, ChaumPedersenProof]]]]:
    """(M, proof) for every selection of every target, in one thread pool over all of them
    (spoiled ballots have few selections each, so they are flattened together)."""
    flat = [ct for t in targets for _, _, ct in t.items()]
    it = iter(thread_map(lambda ct: partial_decrypt(ct, secret, q_hash), flat, workers))
    return [[[next(it) for _ in c.selections] for c in t.contests] for t in targets]


def _decryption_key(guardian: PrivateGuardianRecord | ElectionKeyPair | DecryptionKey) -> DecryptionKey:
    if isinstance(guardian, DecryptionKey):
        return guardian
    if isinstance(guardian, PrivateGuardianRecord):
        return guardian.decryption_key()
    kp = guardian.key_pair
    return DecryptionKey(guardian.owner_id, guardian.sequence_order, kp.secret_key, kp.public_key)


def compute_decryption_shares(
    guardian: PrivateGuardianRecord | ElectionKeyPair | DecryptionKey,
    targets: Sequence[CiphertextTally | Any],
    context: ElectionContext,
    workers: int | None = None,
) -> list[DecryptionShare]:
    """A present guardian's share of every selection of each target, each with its proof.
    Only the guardian's secret key is used, so a DecryptionKey alone is enough."""
    ts = [target_of(x) for x in targets]
    key = _decryption_key(guardian)
    gid = key.guardian_id
    results = _partial_decryptions(ts, key.secret_key, context.crypto_extended_base_hash, workers)
    out = []
    for t, per_target in zip(ts, results, strict=True):
        contests = {}
        for c, per_contest in zip(t.contests, per_target, strict=True):
            selections = {
                sid: CiphertextDecryptionSelection(sid, gid, m, proof=proof)
                for (sid, _), (m, proof) in zip(c.selections, per_contest, strict=True)
            }
            contests[c.object_id] = CiphertextDecryptionContest(
                c.object_id, gid, c.description_hash, selections
            )
        out.append(DecryptionShare(t.object_id, gid, key.public_key, contests))
    return out


def compute_decryption_share(
    guardian: PrivateGuardianRecord | ElectionKeyPair | DecryptionKey,
    target: CiphertextTally | Any,
    context: ElectionContext,
    workers: int | None = None,
) -> DecryptionShare:
    """A present guardian's share of one tally or ballot."""
    return compute_decryption_shares(guardian, [target], context, workers)[0]


def compute_recovery_public_key(
    present_sequence_order: int, missing: ElectionPublicKey | GuardianRecord
) -> mpz:
    """g^P_missing(l) from the missing guardian's public commitments."""
    commitments = (
        missing.coefficient_commitments
        if isinstance(missing, ElectionPublicKey)
        else missing.election_commitments
    )
    return commitment_product(present_sequence_order, commitments)


def _guardian_id(g: ElectionPublicKey | GuardianRecord) -> str:
    return g.owner_id if isinstance(g, ElectionPublicKey) else g.guardian_id


def compute_compensated_decryption_shares(
    guardian: PrivateGuardianRecord,
    missing: ElectionPublicKey | GuardianRecord,
    targets: Sequence[CiphertextTally | Any],
    context: ElectionContext,
    workers: int | None = None,
) -> list[CompensatedDecryptionShare]:
    """The present guardian's shares on behalf of ``missing``, from the backup ``missing`` sent it."""
    keys = guardian.election_keys
    return compensated_shares_from_coordinate(
        keys.owner_id,
        keys.sequence_order,
        keys.key_pair.public_key,
        guardian.coordinate_from(_guardian_id(missing)),
        missing,
        targets,
        context,
        workers,
    )


def compensated_shares_from_key(
    key: CompensationKey,
    missing: ElectionPublicKey | GuardianRecord,
    targets: Sequence[CiphertextTally | Any],
    context: ElectionContext,
    workers: int | None = None,
) -> list[CompensatedDecryptionShare]:
    """Compensated shares from an escrowed CompensationKey (the opened backup coordinate alone)."""
    if key.missing_guardian_id != _guardian_id(missing):
        raise DecryptionError(
            [
                f"guardian {key.guardian_id}: key is for missing {key.missing_guardian_id},"
                f" not {_guardian_id(missing)}"
            ]
        )
    return compensated_shares_from_coordinate(
        key.guardian_id,
        key.sequence_order,
        key.public_key,
        key.coordinate,
        missing,
        targets,
        context,
        workers,
    )


def compensated_shares_from_coordinate(
    present_guardian_id: str,
    present_sequence_order: int,
    present_public_key: mpz,
    coordinate: mpz,
    missing: ElectionPublicKey | GuardianRecord,
    targets: Sequence[CiphertextTally | Any],
    context: ElectionContext,
    workers: int | None = None,
) -> list[CompensatedDecryptionShare]:
    """Compensated shares from the decrypted backup coordinate P_missing(present sequence order) alone,
    for callers that keep only that secret rather than the whole private guardian record."""
    ts = [target_of(x) for x in targets]
    missing_id = _guardian_id(missing)
    recovery_key = compute_recovery_public_key(present_sequence_order, missing)
    if g_pow_p(coordinate) != recovery_key:
        raise DecryptionError(
            [f"guardian {present_guardian_id}: backup from {missing_id} does not match its commitments"]
        )
    gid = present_guardian_id
    results = _partial_decryptions(ts, coordinate, context.crypto_extended_base_hash, workers)
    out = []
    for t, per_target in zip(ts, results, strict=True):
        contests = {}
        for c, per_contest in zip(t.contests, per_target, strict=True):
            selections = {
                sid: CiphertextCompensatedDecryptionSelection(sid, gid, missing_id, m, recovery_key, proof)
                for (sid, _), (m, proof) in zip(c.selections, per_contest, strict=True)
            }
            contests[c.object_id] = CiphertextCompensatedDecryptionContest(
                c.object_id, gid, missing_id, c.description_hash, selections
            )
        out.append(CompensatedDecryptionShare(t.object_id, gid, missing_id, present_public_key, contests))
    return out


def compute_compensated_decryption_share(
    guardian: PrivateGuardianRecord,
    missing: ElectionPublicKey | GuardianRecord,
    target: CiphertextTally | Any,
    context: ElectionContext,
    workers: int | None = None,
) -> CompensatedDecryptionShare:
    """The present guardian's share of one tally or ballot on behalf of ``missing``."""
    return compute_compensated_decryption_shares(guardian, missing, [target], context, workers)[0]


def compute_lagrange_coefficients(available: Iterable[tuple[str, int]]) -> dict[str, mpz]:
    """w_l for each available (guardian id, sequence order), over the other available guardians."""
    pairs = list(available)
    return {
        gid: compute_lagrange_coefficient(seq, *[s for other, s in pairs if other != gid])
        for gid, seq in pairs
    }


def reconstruct_decryption_share(
    missing: ElectionPublicKey | GuardianRecord,
    target: CiphertextTally | Any,
    shares: dict[str, CompensatedDecryptionShare],
    lagrange_coefficients: dict[str, mpz],
) -> DecryptionShare:
    """M_j = prod_l M_{j,l}^w_l per selection, keeping the parts as ``recovered_parts``."""
    t = target_of(target)
    missing_id = _guardian_id(missing)
    missing_key = missing.key if isinstance(missing, ElectionPublicKey) else missing.election_public_key
    if set(shares) != set(lagrange_coefficients):
        raise DecryptionError(
            [f"reconstruction of {missing_id}: shares and coefficients name different guardians"]
        )
    order = list(shares)
    weights = [lagrange_coefficients[g] for g in order]
    contests = {}
    for c in t.contests:
        selections = {}
        for sid, _ in c.selections:
            parts = {}
            for g in order:
                part = shares[g].contests.get(c.object_id)
                part_sel = None if part is None else part.selections.get(sid)
                if part_sel is None:
                    raise DecryptionError(
                        [f"guardian {g}: no compensated share for {missing_id} of {c.object_id}/{sid}"]
                    )
                parts[g] = part_sel
            m = product_of_powers([parts[g].share for g in order], weights)
            selections[sid] = CiphertextDecryptionSelection(sid, missing_id, m, recovered_parts=parts)
        contests[c.object_id] = CiphertextDecryptionContest(
            c.object_id, missing_id, c.description_hash, selections
        )
    return DecryptionShare(t.object_id, missing_id, missing_key, contests)


# --- checking shares ----------------------------------------------------------------------------


def share_statements(
    share: DecryptionShare, target: CiphertextTally | Any, public_key: mpz
) -> tuple[list[ShareStatement], list[str]]:
    """The proofs to check for one guardian's share (its own, or the parts of a reconstructed one),
    and the structural problems (missing selections, a selection with neither proof nor parts)."""
    t = target_of(target)
    statements: list[ShareStatement] = []
    problems: list[str] = []
    for c in t.contests:
        for sid, ct in c.selections:
            where = f"{t.object_id}/{c.object_id}/{sid}"
            sel = share.selection(c.object_id, sid)
            if sel is None:
                problems.append(f"guardian {share.guardian_id}: no share for {where}")
            elif sel.proof is not None and sel.recovered_parts is None:
                statements.append(
                    ShareStatement(
                        f"guardian {share.guardian_id}: share of {where}",
                        ct,
                        public_key,
                        sel.share,
                        sel.proof,
                    )
                )
            elif sel.recovered_parts is not None and sel.proof is None:
                for g, part in sel.recovered_parts.items():
                    statements.append(
                        ShareStatement(
                            f"guardian {g}: compensated share for missing guardian {share.guardian_id}"
                            f" of {where}",
                            ct,
                            part.recovery_key,
                            part.share,
                            part.proof,
                        )
                    )
            else:
                problems.append(
                    f"guardian {share.guardian_id}: share of {where} needs a proof or recovered parts"
                )
    return statements, problems


@dataclass(slots=True)
class Reconstruction:
    """One claim M_j = prod_l M_{j,l}^w_l to check; ``label`` names it in problems."""

    label: str
    share: mpz  # M_j
    parts: dict[str, mpz]  # present guardian id -> M_{j,l}
    weights: dict[str, mpz]  # present guardian id -> w_l


def _reconstruction_holds(r: Reconstruction) -> bool:
    ids = list(r.parts)
    return (
        set(ids) == set(r.weights)
        and product_of_powers([r.parts[g] for g in ids], [r.weights[g] for g in ids]) == r.share
    )


def reconstruction_problems(claims: Sequence[Reconstruction]) -> list[str]:
    """Labels of the false claims, checked in batches by random linear combination.

    For the claims sharing one set of weights, with independent 64-bit r_i:
    prod_l (prod_i M_{i,l}^r_i)^w_l = prod_i M_i^r_i, i.e. (quorum + 1) short multi-exponentiations and
    a quorum of full exponentiations for the whole batch instead of a quorum per claim. Every element
    first passes a Jacobi check, so each D_i = M_i^-1 prod_l M_{i,l}^w_l lies in the subgroup of order
    q R (q and R prime, > 2^64): projected on either prime-order factor, a batch with some D_i != 1
    passes with probability at most 2^-64. Exponents are not reduced, so no subgroup test is needed.
    A failing batch is re-checked claim by claim.
    """
    bad: list[str] = []
    groups: dict[tuple[tuple[str, int], ...], list[Reconstruction]] = {}
    for c in claims:
        if set(c.parts) != set(c.weights):
            bad.append(c.label)
        else:
            groups.setdefault(tuple(sorted((g, int(w)) for g, w in c.weights.items())), []).append(c)
    for key, group in groups.items():
        elements = [x for c in group for x in (c.share, *c.parts.values())]
        if any(not 0 < x < P or gmpy2.jacobi(x, P) != 1 for x in elements):
            bad += [c.label for c in group if not _reconstruction_holds(c)]
            continue
        r = [secrets.randbits(64) for _ in group]
        right = multiexp([c.share for c in group], r)
        left = ONE
        for g, w in key:
            left = left * gmpy2.powmod(multiexp([c.parts[g] for c in group], r), w, P) % P
        if left != right:
            bad += [c.label for c in group if not _reconstruction_holds(c)]
    order = {c.label: i for i, c in enumerate(claims)}
    return sorted(set(bad), key=lambda label: order[label])


def check_reconstruction(
    share: DecryptionShare,
    missing: ElectionPublicKey | GuardianRecord,
    sequence_orders: dict[str, int],
    lagrange_coefficients: dict[str, mpz] | None = None,
) -> list[str]:
    """For a reconstructed share: recovery keys from the missing guardian's commitments, and
    M_j = prod M_{j,l}^w_l with the Lagrange coefficients of the guardians that gave parts."""
    problems = []
    missing_id = _guardian_id(missing)
    recovery: dict[str, mpz] = {}
    weights: dict[frozenset[str], dict[str, mpz]] = {}
    claims = []
    for contest in share.contests.values():
        for sid, sel in contest.selections.items():
            parts = sel.recovered_parts
            if parts is None:
                continue
            where = f"{share.object_id}/{contest.object_id}/{sid}"
            for g, part in parts.items():
                if g not in recovery:
                    recovery[g] = compute_recovery_public_key(sequence_orders[g], missing)
                if part.recovery_key != recovery[g]:
                    problems.append(
                        f"guardian {g}: wrong recovery key for missing guardian {missing_id} in {where}"
                    )
            ids = frozenset(parts)
            if ids not in weights:
                weights[ids] = compute_lagrange_coefficients((g, sequence_orders[g]) for g in ids)
            claims.append(
                Reconstruction(
                    f"missing guardian {missing_id}: reconstructed share of {where} is wrong",
                    sel.share,
                    {g: p.share for g, p in parts.items()},
                    lagrange_coefficients or weights[ids],
                )
            )
    return problems + reconstruction_problems(claims)


def verify_decryption_shares(
    target: CiphertextTally | Any,
    shares: dict[str, DecryptionShare],
    guardians: Sequence[GuardianRecord],
    context: ElectionContext,
) -> list[str]:
    """Every proof of every share of the target, batched, and for reconstructed shares the recovery
    keys (from the missing guardian's published commitments, never from the share) and the Lagrange
    product. Keys come from the guardian records. Problems name the guardian and the selection."""
    records = {g.guardian_id: g for g in guardians}
    sequence_orders = {g.guardian_id: g.sequence_order for g in guardians}
    object_id = target_of(target).object_id
    statements: list[ShareStatement] = []
    problems: list[str] = []
    for gid, share in shares.items():
        if gid not in records:
            problems.append(f"guardian {gid}: not a guardian of this election")
            continue
        if share.object_id != object_id or share.guardian_id != gid:
            problems.append(
                f"guardian {gid}: share is {share.guardian_id}'s of {share.object_id}, not of {object_id}"
            )
        st, pr = share_statements(share, target, records[gid].election_public_key)
        statements += st
        problems += pr
        if any(
            sel.recovered_parts is not None for c in share.contests.values() for sel in c.selections.values()
        ):
            if any(g not in sequence_orders for sel in _selections(share) for g in sel.recovered_parts or {}):
                problems.append(f"missing guardian {gid}: recovered parts from unknown guardians")
            else:
                problems += check_reconstruction(share, records[gid], sequence_orders)
    return problems + verify_shares(statements, context.crypto_extended_base_hash)


def _selections(share: DecryptionShare) -> list[CiphertextDecryptionSelection]:
    return [sel for c in share.contests.values() for sel in c.selections.values()]


# --- combining ----------------------------------------------------------------------------------


class DiscreteLog:
    """log_g of small values. A table of g^0..g^(m-1) keyed by the low 64 bits of each element (a hit is
    confirmed by one exponentiation), grown on demand up to ``m``; beyond it, giant steps of g^-m.
    So memory stays at ~100 bytes per table entry even for counts in the millions."""

    def __init__(self, table_size: int = 1 << 16, max_exponent: int = 100_000_000) -> None:
        self._m = table_size
        self._max = max_exponent
        self._table: dict[int, int] = {1: 0}
        self._last = ONE  # g^(_next - 1)
        self._next = 1
        self._lock = threading.Lock()
        self._giant: mpz | None = None  # g^-m, made on first need

    @staticmethod
    def _key(x: mpz) -> int:
        return int(x & 0xFFFFFFFFFFFFFFFF)

    def _grow_until(self, x: mpz | None) -> int | None:
        g = G
        with self._lock:
            k = self._key(x) if x is not None else None
            if k is not None and k in self._table and g_pow_p(self._table[k]) == x:
                return self._table[k]
            while self._next < self._m:
                e = self._next
                self._last = self._last * g % P
                self._next += 1
                # on a (2^-64) collision of low bits keep the smaller exponent; lookups confirm hits
                self._table.setdefault(self._key(self._last), e)
                if x is not None and self._last == x:
                    return e
        return None

    def _lookup(self, x: mpz) -> int | None:
        e = self._table.get(self._key(x))
        if e is not None and g_pow_p(e) == x:
            return e
        return None

    def __call__(self, x: mpz) -> int:
        x = mpz(x)
        e = self._lookup(x)
        if e is not None:
            return e
        if self._next < self._m:
            e = self._grow_until(x)
            if e is not None:
                return e
        if self._giant is None:
            self._giant = gmpy2.invert(gmpy2.powmod(G, self._m, P), P)
        y = x
        for step in range(1, self._max // self._m + 2):
            y = y * self._giant % P
            e = self._lookup(y)
            if e is not None:
                return step * self._m + e
        raise DecryptionError([f"no discrete log up to {self._max}"])


DISCRETE_LOG = DiscreteLog()


def decrypt_selection(message: Ciphertext, shares: Sequence[mpz]) -> tuple[int, mpz]:
    """(t, g^t) with g^t = B / prod M_i."""
    product = ONE
    for m in shares:
        product = product * m % P
    value = message.data * gmpy2.invert(product, P) % P
    return DISCRETE_LOG(value), value


def combine_shares(
    target: CiphertextTally | Any,
    shares: dict[str, DecryptionShare],
    guardians: Sequence[GuardianRecord],
    context: ElectionContext,
    manifest: Any | None = None,
    verify: bool = True,
) -> PlaintextTally:
    """The plaintext of the target from one share per guardian (all n, missing ones reconstructed).

    With ``verify`` every proof is checked first (batched) and a DecryptionError names each bad share.
    With a manifest, contests and selections it does not describe (placeholders) are left out, as the
    reference's ``decrypt_ballot`` does.
    """
    if len(shares) != context.number_of_guardians:
        raise DecryptionError([f"{len(shares)} shares for {context.number_of_guardians} guardians"])
    if verify and (problems := verify_decryption_shares(target, shares, guardians, context)):
        raise DecryptionError(problems)
    t = target_of(target)
    described: dict[str, set[str]] | None = None
    if manifest is not None:
        described = {c.object_id: {s.object_id for s in c.ballot_selections} for c in manifest.contests}
    contests = {}
    for c in t.contests:
        if described is not None and c.object_id not in described:
            continue
        selections = {}
        for sid, ct in c.selections:
            if described is not None and sid not in described[c.object_id]:
                continue
            parts = [shares[g].selection(c.object_id, sid) for g in shares]
            if any(p is None for p in parts):
                raise DecryptionError([f"a share of {t.object_id}/{c.object_id}/{sid} is missing"])
            present = [p for p in parts if p is not None]
            tally, value = decrypt_selection(ct, [p.share for p in present])
            selections[sid] = PlaintextTallySelection(sid, tally, value, ct, present)
        contests[c.object_id] = PlaintextTallyContest(c.object_id, selections)
    return PlaintextTally(t.object_id, contests)


def decrypt_with_guardians(
    target: CiphertextTally | Any,
    available: Sequence[PrivateGuardianRecord],
    guardians: Sequence[GuardianRecord],
    context: ElectionContext,
    manifest: Any | None = None,
    workers: int | None = None,
) -> PlaintextTally:
    """The whole decryption in one process: shares of the available guardians, compensated shares and
    reconstruction for the missing ones, then the combine (with every proof checked)."""
    if len(available) < context.quorum:
        raise DecryptionError([f"{len(available)} guardians available, quorum is {context.quorum}"])
    present_ids = [g.guardian_id for g in available]
    shares: dict[str, DecryptionShare] = {
        g.guardian_id: compute_decryption_share(g, target, context, workers) for g in available
    }
    lagrange = compute_lagrange_coefficients((g.guardian_id, g.sequence_order) for g in available)
    for missing in guardians:
        if missing.guardian_id in present_ids:
            continue
        compensated = {
            g.guardian_id: compute_compensated_decryption_share(g, missing, target, context, workers)
            for g in available
        }
        shares[missing.guardian_id] = reconstruct_decryption_share(missing, target, compensated, lagrange)
    return combine_shares(target, shares, guardians, context, manifest)


__all__ = [
    "CiphertextCompensatedDecryptionContest",
    "CiphertextCompensatedDecryptionSelection",
    "CiphertextDecryptionContest",
    "CiphertextDecryptionSelection",
    "CompensatedDecryptionShare",
    "DecryptionError",
    "DecryptionShare",
    "DiscreteLog",
    "PlaintextTally",
    "PlaintextTallyContest",
    "PlaintextTallySelection",
    "Reconstruction",
    "Target",
    "check_reconstruction",
    "combine_shares",
    "compensated_shares_from_coordinate",
    "compensated_shares_from_key",
    "compute_compensated_decryption_share",
    "compute_compensated_decryption_shares",
    "compute_decryption_share",
    "compute_decryption_shares",
    "compute_lagrange_coefficients",
    "compute_recovery_public_key",
    "decrypt_with_guardians",
    "merge_plaintexts",
    "reconstruct_decryption_share",
    "reconstruction_problems",
    "share_statements",
    "target_of",
    "verify_decryption_shares",
]
