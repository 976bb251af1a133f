"""Combining shares into plaintexts (``electionguard.decrypt_with_shares``): B / prod M_i = g^t and its
discrete log, per selection, after every share is checked; merging the plaintexts of disjoint slices;
and the whole decryption in one process from the guardians' private records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gmpy2
from gmpy2 import mpz

from compute.constants import ONE, P
from compute.context import ElectionContext
from compute.decryption import (
    compute_compensated_decryption_share,
    compute_decryption_share,
    compute_lagrange_coefficients,
    reconstruct_decryption_share,
)
from compute.decryption_share import DecryptionError, DecryptionShare
from compute.decryption_target import target_of
from compute.discrete_log import DISCRETE_LOG
from compute.elgamal import Ciphertext
from compute.guardian import GuardianRecord, PrivateGuardianRecord
from compute.plaintext_tally import PlaintextTally, PlaintextTallyContest, PlaintextTallySelection
from compute.share_checks import verify_decryption_shares
from compute.tally import CiphertextTally


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
