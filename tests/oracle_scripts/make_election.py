"""Run a whole election in the reference electionguard 1.4.0 and export its record (oracle, Python 3.10).

usage: make_election.py OUT_DIR [--manifest PATH] [--guardians N] [--quorum K] [--missing M]
                        [--ballots B] [--spoil-every S] [--seed SEED]

Manifest: ``ElectionFactory.get_fake_manifest()`` unless ``--manifest`` names a JSON file.
Key ceremony with N guardians, quorum K; B ballots with seeded random choices (undervotes included);
every S-th ballot (1-based) is spoiled, the rest cast; tally; decryption with the last M guardians
missing (compensated by the first N-M); export with ``export_record`` and ``export_private_data``
into OUT_DIR/election_record and OUT_DIR/election_private_data.

The last stdout line is a JSON summary: plaintext tally counts per contest and selection (from the
reference's decryption), the counts expected from the plaintext ballots, ballot ids cast and spoiled,
the available and missing guardian ids.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys

logging.disable(logging.CRITICAL)

from electionguard.ballot import (  # noqa: E402
    BallotBoxState,
    CiphertextBallot,
    PlaintextBallot,
    PlaintextBallotContest,
    PlaintextBallotSelection,
    SubmittedBallot,
)
from electionguard.ballot_box import BallotBox, get_ballots  # noqa: E402
from electionguard.constants import get_constants  # noqa: E402
from electionguard.data_store import DataStore  # noqa: E402
from electionguard.decryption_mediator import DecryptionMediator  # noqa: E402
from electionguard.election_polynomial import LagrangeCoefficientsRecord  # noqa: E402
from electionguard.encrypt import EncryptionDevice, EncryptionMediator  # noqa: E402
from electionguard.guardian import PrivateGuardianRecord  # noqa: E402
from electionguard.key_ceremony import CeremonyDetails  # noqa: E402
from electionguard.key_ceremony_mediator import KeyCeremonyMediator  # noqa: E402
from electionguard.manifest import InternalManifest, Manifest  # noqa: E402
from electionguard.serialize import from_file  # noqa: E402
from electionguard.tally import tally_ballots  # noqa: E402
from electionguard.utils import get_optional  # noqa: E402
from electionguard_tools.factories.election_factory import ElectionFactory  # noqa: E402
from electionguard_tools.helpers.election_builder import ElectionBuilder  # noqa: E402
from electionguard_tools.helpers.export import export_private_data, export_record  # noqa: E402
from electionguard_tools.helpers.key_ceremony_orchestrator import KeyCeremonyOrchestrator  # noqa: E402
from electionguard_tools.helpers.tally_ceremony_orchestrator import TallyCeremonyOrchestrator  # noqa: E402


def make_ballots(internal: InternalManifest, count: int, rng: random.Random) -> list[PlaintextBallot]:
    ballots = []
    for i in range(count):
        style = internal.ballot_styles[i % len(internal.ballot_styles)]
        contests = []
        for contest in internal.get_contests_for(style.object_id):
            # 0..number_elected selections: undervotes exercise the placeholders
            k = rng.randint(0, contest.number_elected)
            chosen = {s.object_id for s in rng.sample(contest.ballot_selections, k)}
            contests.append(
                PlaintextBallotContest(
                    contest.object_id,
                    [
                        PlaintextBallotSelection(s.object_id, 1 if s.object_id in chosen else 0)
                        for s in contest.ballot_selections
                    ],
                )
            )
        ballots.append(PlaintextBallot(f"ballot-{i:03d}", style.object_id, contests))
    return ballots


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--manifest", default=None)
    ap.add_argument("--guardians", type=int, default=5)
    ap.add_argument("--quorum", type=int, default=3)
    ap.add_argument("--missing", type=int, default=2)
    ap.add_argument("--ballots", type=int, default=6)
    ap.add_argument("--spoil-every", type=int, default=4)
    ap.add_argument("--seed", type=int, default=20240501)
    a = ap.parse_args()
    assert a.guardians - a.missing >= a.quorum, "not enough guardians left for a quorum"
    rng = random.Random(a.seed)

    manifest: Manifest = (
        from_file(Manifest, a.manifest) if a.manifest else ElectionFactory.get_fake_manifest()
    )

    details = CeremonyDetails(a.guardians, a.quorum)
    guardians = KeyCeremonyOrchestrator.create_guardians(details)
    kc_mediator = KeyCeremonyMediator("key-ceremony-mediator", details)
    KeyCeremonyOrchestrator.perform_full_ceremony(guardians, kc_mediator)
    joint_key = get_optional(kc_mediator.publish_joint_key())
    builder = ElectionBuilder(a.guardians, a.quorum, manifest)
    builder.set_public_key(joint_key.joint_public_key)
    builder.set_commitment_hash(joint_key.commitment_hash)
    internal, context = get_optional(builder.build())

    device = EncryptionDevice(4242, 12345, 45678, "polling-place")
    encrypter = EncryptionMediator(internal, context, device)
    plaintext_ballots = make_ballots(internal, a.ballots, rng)
    ciphertext_ballots: list[CiphertextBallot] = [
        get_optional(encrypter.encrypt(b)) for b in plaintext_ballots
    ]

    store: DataStore = DataStore()
    box = BallotBox(internal, context, store)
    submitted: list[SubmittedBallot] = []
    for i, b in enumerate(ciphertext_ballots):
        spoil = a.spoil_every > 0 and (i + 1) % a.spoil_every == 0
        submitted.append(get_optional(box.spoil(b) if spoil else box.cast(b)))

    tally = get_optional(tally_ballots(store, internal, context))
    spoiled = list(get_ballots(store, BallotBoxState.SPOILED).values())

    available = guardians[: a.guardians - a.missing]
    mediator = DecryptionMediator("decryption-mediator", context)
    if a.missing:
        TallyCeremonyOrchestrator.perform_compensated_decryption_setup(
            available, [g.share_key() for g in guardians], mediator, context, tally, spoiled
        )
    else:
        TallyCeremonyOrchestrator.perform_decryption_setup(available, mediator, context, tally, spoiled)
    plaintext_tally = get_optional(mediator.get_plaintext_tally(tally, manifest))
    plaintext_spoiled = list(get_optional(mediator.get_plaintext_ballots(spoiled, manifest)).values())

    record_dir = os.path.join(a.out_dir, "election_record")
    private_dir = os.path.join(a.out_dir, "election_private_data")
    export_record(
        manifest,
        context,
        get_constants(),
        [device],
        submitted,
        plaintext_spoiled,
        tally.publish(),
        plaintext_tally,
        [g.publish() for g in guardians],
        LagrangeCoefficientsRecord(mediator.get_lagrange_coefficients()),
        record_dir,
    )
    export_private_data(
        plaintext_ballots,
        ciphertext_ballots,
        [
            PrivateGuardianRecord(
                g.id,
                g._election_keys,
                g._backups_to_share,
                g._guardian_election_public_keys,
                g._guardian_election_partial_key_backups,
                g._guardian_election_partial_key_verifications,
            )
            for g in guardians
        ],
        private_dir,
    )

    counts: dict[str, dict[str, int]] = {
        cid: {sid: int(sel.tally) for sid, sel in contest.selections.items()}
        for cid, contest in plaintext_tally.contests.items()
    }
    expected: dict[str, dict[str, int]] = {}
    for b, s in zip(plaintext_ballots, submitted, strict=True):
        for c in b.contests:
            row = expected.setdefault(c.object_id, {})
            for sel in c.ballot_selections:
                cast = s.state == BallotBoxState.CAST
                row[sel.object_id] = row.get(sel.object_id, 0) + (sel.vote if cast else 0)
    summary = {
        "tally": counts,
        "expected_tally": expected,
        "cast_ballot_ids": [s.object_id for s in submitted if s.state == BallotBoxState.CAST],
        "spoiled_ballot_ids": [s.object_id for s in submitted if s.state == BallotBoxState.SPOILED],
        "available_guardian_ids": [g.id for g in available],
        "missing_guardian_ids": [g.id for g in guardians[len(available) :]],
        "number_of_guardians": a.guardians,
        "quorum": a.quorum,
        "manifest_hash": context.manifest_hash.to_hex(),
        "encryption_device_hash": device.get_hash().to_hex(),
    }
    sys.stdout.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
