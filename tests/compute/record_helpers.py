"""Election records made by our own code, of any size, for the streaming verifier's tests.

Encryption is the slow part (about 5 ms a ballot here for one contest of one candidate, on two threads),
so ``ballots`` encrypts once and ``write`` makes records of any prefix of those ballots.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from gmpy2 import mpz

from compute.ballot import BallotBoxState, SubmittedBallot
from compute.context import ElectionContext
from compute.decrypt_with_shares import decrypt_with_guardians
from compute.decryption import compute_lagrange_coefficients
from compute.encrypt import encrypt_ballot, submit
from compute.guardian import GuardianRecord, PrivateGuardianRecord
from compute.keyceremony import run_key_ceremony
from compute.manifest import InternalManifest, Manifest, build_simple_manifest
from compute.parallel import thread_map
from compute.record import ElectionRecord, write_record
from compute.tally import accumulate, new_tally
from tests.compute.small_election import plaintext_ballot


@dataclass
class Keys:
    manifest: Manifest
    internal: InternalManifest
    privates: list[PrivateGuardianRecord]
    records: list[GuardianRecord]
    context: ElectionContext


def keys(candidates: tuple[str, ...] = ("Ada",), guardians: int = 3, quorum: int = 2) -> Keys:
    manifest = build_simple_manifest(list(candidates))
    internal = InternalManifest.from_manifest(manifest)
    privates, records, context = run_key_ceremony(guardians, quorum, internal.manifest_hash)
    return Keys(manifest, internal, privates, records, context)


def ballots(k: Keys, n: int, spoil_every: int = 0, seed: int = 3, workers: int = 2) -> list[SubmittedBallot]:
    """``n`` ballots, every ``spoil_every``-th spoiled (none if 0)."""
    rng = random.Random(seed)
    plain = [plaintext_ballot(k.internal, f"ballot-{i:06d}", rng) for i in range(n)]

    def one(i: int) -> SubmittedBallot:
        state = (
            BallotBoxState.SPOILED
            if spoil_every and i % spoil_every == spoil_every - 1
            else BallotBoxState.CAST
        )
        return submit(encrypt_ballot(plain[i], k.internal, k.context, mpz(1)), state)

    return thread_map(one, list(range(n)), workers)


def write(k: Keys, submitted: list[SubmittedBallot], directory: Path, missing: int = 1) -> Path:
    """The record of ``submitted``, decrypted by all guardians but the last ``missing``."""
    present = k.privates[: len(k.privates) - missing]
    tally = accumulate(new_tally(k.internal), submitted)
    spoiled = {
        b.object_id: decrypt_with_guardians(b, present, k.records, k.context, manifest=k.internal)
        for b in submitted
        if b.state == BallotBoxState.SPOILED
    }
    record = ElectionRecord(
        manifest=k.manifest,
        context=k.context,
        guardians=k.records,
        lagrange_coefficients=compute_lagrange_coefficients(
            (g.guardian_id, g.sequence_order) for g in present
        ),
        submitted_ballots=submitted,
        spoiled_ballots=spoiled,
        encrypted_tally=tally,
        tally=decrypt_with_guardians(tally, present, k.records, k.context),
    )
    return write_record(record, directory)
