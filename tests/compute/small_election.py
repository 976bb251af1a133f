"""A small election made entirely by our code, for the unit tests of tally, decryption and verify."""

from __future__ import annotations

import random
from dataclasses import dataclass

from gmpy2 import mpz

from compute.ballot import (
    BallotBoxState,
    PlaintextBallot,
    PlaintextBallotContest,
    PlaintextBallotSelection,
    SubmittedBallot,
)
from compute.context import ElectionContext
from compute.encrypt import encrypt_ballot, submit
from compute.guardian import GuardianRecord, PrivateGuardianRecord
from compute.keyceremony import run_key_ceremony
from compute.manifest import InternalManifest, Manifest, build_simple_manifest


@dataclass
class SmallElection:
    privates: list[PrivateGuardianRecord]
    records: list[GuardianRecord]
    context: ElectionContext
    manifest: Manifest
    internal: InternalManifest
    submitted: list[SubmittedBallot]
    counts: dict[str, dict[str, int]]  # expected tally of the cast ballots
    spoiled_votes: dict[str, dict[str, dict[str, int]]]  # ballot id -> contest -> selection -> vote


def plaintext_ballot(internal: InternalManifest, ballot_id: str, rng: random.Random) -> PlaintextBallot:
    contests = []
    for c in internal.contests:
        chosen = rng.randrange(len(c.ballot_selections) + 1)  # one past the end: an undervote
        contests.append(
            PlaintextBallotContest(
                c.object_id,
                tuple(
                    PlaintextBallotSelection(s.object_id, 1 if i == chosen else 0)
                    for i, s in enumerate(c.ballot_selections)
                ),
            )
        )
    return PlaintextBallot(ballot_id, internal.manifest.ballot_styles[0].object_id, tuple(contests))


def make_election(
    n: int = 5, k: int = 3, n_cast: int = 4, n_spoiled: int = 1, seed: int = 7
) -> SmallElection:
    rng = random.Random(seed)
    manifest = build_simple_manifest(["Ada", "Grace", "Edsger"])
    internal = InternalManifest.from_manifest(manifest)
    privates, records, context = run_key_ceremony(n, k, internal.manifest_hash)
    counts = {c.object_id: {s.object_id: 0 for s in c.ballot_selections} for c in internal.contests}
    spoiled_votes: dict[str, dict[str, dict[str, int]]] = {}
    submitted = []
    code = mpz(12345)
    for i in range(n_cast + n_spoiled):
        pb = plaintext_ballot(internal, f"ballot-{i}", rng)
        ct = encrypt_ballot(pb, internal, context, code)
        code = ct.code
        votes = {c.object_id: {s.object_id: s.vote for s in c.ballot_selections} for c in pb.contests}
        if i < n_cast:
            submitted.append(submit(ct, BallotBoxState.CAST))
            for cid, sel in votes.items():
                for sid, v in sel.items():
                    counts[cid][sid] += v
        else:
            submitted.append(submit(ct, BallotBoxState.SPOILED))
            spoiled_votes[pb.object_id] = votes
    return SmallElection(privates, records, context, manifest, internal, submitted, counts, spoiled_votes)
