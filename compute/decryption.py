"""Making decryption shares (``electionguard.decryption``): a present guardian's shares M_i = A^s_i of a
target's selections; compensated shares M_{j,l} = A^P_j(l) on behalf of a missing guardian j, from the
backup coordinate P_j(l) that j sent guardian l, proved against the recovery key
g^P_j(l) = prod_k K_{j,k}^(l^k); and the Lagrange reconstruction M_j = prod_l M_{j,l}^w_l.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gmpy2 import mpz

from compute.chaum_pedersen import ChaumPedersenProof, partial_decrypt
from compute.context import ElectionContext
from compute.decryption_share import (
    CiphertextCompensatedDecryptionContest,
    CiphertextCompensatedDecryptionSelection,
    CiphertextDecryptionContest,
    CiphertextDecryptionSelection,
    CompensatedDecryptionShare,
    DecryptionError,
    DecryptionShare,
)
from compute.decryption_target import Target, target_of
from compute.group import g_pow_p
from compute.guardian import (
    CompensationKey,
    DecryptionKey,
    ElectionKeyPair,
    ElectionPublicKey,
    GuardianRecord,
    PrivateGuardianRecord,
)
from compute.multiexp import product_of_powers
from compute.parallel import thread_map
from compute.polynomial import commitment_product, compute_lagrange_coefficient
from compute.tally import CiphertextTally


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


def guardian_id_of(g: ElectionPublicKey | GuardianRecord) -> str:
    """The id of a guardian given by its public key (``owner_id``) or by its record."""
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
        guardian.coordinate_from(guardian_id_of(missing)),
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
    if key.missing_guardian_id != guardian_id_of(missing):
        raise DecryptionError(
            [
                f"guardian {key.guardian_id}: key is for missing {key.missing_guardian_id},"
                f" not {guardian_id_of(missing)}"
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
    missing_id = guardian_id_of(missing)
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
    missing_id = guardian_id_of(missing)
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
