"""Checking decryption shares before anything is combined: the Chaum-Pedersen statement of each share
(or of each part of a reconstructed one), verified in batches; for reconstructed shares the recovery keys,
from the missing guardian's published commitments, and M_j = prod_l M_{j,l}^w_l, checked in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gmpy2
from gmpy2 import mpz

from compute.chaum_pedersen import ShareStatement, verify_shares
from compute.constants import ONE, P
from compute.context import ElectionContext
from compute.decryption import compute_lagrange_coefficients, compute_recovery_public_key, guardian_id_of
from compute.decryption_share import CiphertextDecryptionSelection, DecryptionShare
from compute.decryption_target import target_of
from compute.guardian import ElectionPublicKey, GuardianRecord
from compute.multiexp import choose_window, multiexp_checking_residues, product_of_powers
from compute.tally import CiphertextTally
from compute.weights import WEIGHT_BITS, weights


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


def reconstruction_problems(claims: Sequence[Reconstruction], parts_checked: bool = False) -> list[str]:
    """Labels of the false claims, checked in batches by random linear combination.

    For the claims sharing one set of weights, with independent 64-bit r_i:
    prod_l (prod_i M_{i,l}^r_i)^w_l = prod_i M_i^r_i, i.e. (quorum + 1) short multi-exponentiations and
    a quorum of full exponentiations for the whole batch instead of a quorum per claim. Every element
    must be a quadratic residue, so each D_i = M_i^-1 prod_l M_{i,l}^w_l lies in the subgroup of order
    q R (q and R prime, > 2^64): projected on either prime-order factor, a batch with some D_i != 1
    passes with probability at most 2^-64. Exponents are not reduced, so no subgroup test is needed.
    The residues come from the Jacobi symbols of each short multi-exponentiation's buckets (each of the
    (quorum + 1) misses a non-residue among its bases with probability at most 2^-64:
    ``multiexp_residues``), or one per element where that takes fewer symbols.
    A failing batch is re-checked claim by claim.

    ``parts_checked``: the caller checks every part M_{i,l} as the share of a Chaum-Pedersen statement
    (``verify_shares``, whose subgroup test puts it in C_q), or reports it as a problem already; the parts'
    multi-exponentiations then take no Jacobi symbols, and only the reconstructed shares M_i keep theirs.
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
        r = weights(len(group))
        window = choose_window(r)
        if any(not 0 < x < P for x in elements):
            bad += [c.label for c in group if not _reconstruction_holds(c)]
            continue
        shares = [c.share for c in group]
        right = multiexp_checking_residues(shares, r, shares, WEIGHT_BITS, window)
        left: mpz | None = ONE if right is not None else None
        for g, w in key:
            if left is None:  # a non-residue already: the claims are checked one by one below
                break
            parts = [c.parts[g] for c in group]
            part = multiexp_checking_residues(parts, r, [] if parts_checked else parts, WEIGHT_BITS, window)
            left = None if part is None else left * gmpy2.powmod(part, w, P) % P
        if right is None or left is None or left != right:
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
    missing_id = guardian_id_of(missing)
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
    targets_checked: bool = False,
) -> list[str]:
    """Every proof of every share of the target, batched, and for reconstructed shares the recovery
    keys (from the missing guardian's published commitments, never from the share) and the Lagrange
    product. Keys come from the guardian records. Problems name the guardian and the selection.
    ``targets_checked``: the caller has established that the target's ciphertexts are in the order-q
    subgroup (the aggregate of validated ballots, a validated spoiled ballot), so their membership
    terms go (``compute.chaum_pedersen``, step 5)."""
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
    return problems + verify_shares(statements, context.crypto_extended_base_hash, targets_checked)


def _selections(share: DecryptionShare) -> list[CiphertextDecryptionSelection]:
    return [sel for c in share.contests.values() for sel in c.selections.values()]
