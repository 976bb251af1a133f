"""Time the reference on the hot paths (oracle, Python 3.10): encryption, validation, tally, decryption.

usage: bench_reference.py N [--manifest PATH] [--out DIR] [--rounds R] [--guardians 5] [--quorum 3]
                          [--decrypt-reps 2] [--decrypt-rounds 10]
A key ceremony (KeyCeremonyOrchestrator, G guardians, quorum K) gives the joint key and the context; N
ballots with seeded random choices. Times: encrypt_ballot per ballot; ballot_is_valid_for_election(
should_validate=True) per ballot (what BallotBox.cast runs); CiphertextTally.batch_append with
should_validate=False (accumulation only: with True it validates again, in a process pool); then on that
tally Guardian.compute_tally_share of guardian 1 (partial decryption) and
Guardian.compute_compensated_tally_share of guardian 1 for the last guardian (compensated decryption,
backup decryption included). Both decryption calls run their selections through electionguard's Scheduler
thread pool; it is replaced here by a serial one so the work stays on one core (the same calls, in order).
Process CPU time; each time is the minimum over R rounds (steadier on a shared machine); a decryption time
is the minimum over --decrypt-rounds rounds of the mean over --decrypt-reps calls within a round.
With --out, writes the manifest, context, plaintext and submitted ballots there so ours runs on the same.
Prints {"n", "encrypt_s", "validate_s", "tally_s", "partial_s", "compensated_s", "tally_selections",
"peak_rss_ballots_kb", "peak_rss_kb", "selections", "key_ceremony_s"}.
"""

import argparse
import json
import logging
import os
import random
import resource
import time

logging.disable(logging.CRITICAL)

import electionguard.decryption  # noqa: E402
from electionguard.ballot import (  # noqa: E402
    BallotBoxState,
    PlaintextBallot,
    PlaintextBallotContest,
    PlaintextBallotSelection,
)
from electionguard.ballot_box import submit_ballot  # noqa: E402
from electionguard.ballot_validator import ballot_is_valid_for_election  # noqa: E402
from electionguard.data_store import DataStore  # noqa: E402
from electionguard.encrypt import EncryptionDevice, encrypt_ballot  # noqa: E402
from electionguard.key_ceremony import CeremonyDetails  # noqa: E402
from electionguard.key_ceremony_mediator import KeyCeremonyMediator  # noqa: E402
from electionguard.manifest import Manifest  # noqa: E402
from electionguard.serialize import from_file, to_file  # noqa: E402
from electionguard.tally import CiphertextTally  # noqa: E402
from electionguard_tools.factories.election_factory import ElectionFactory  # noqa: E402
from electionguard_tools.helpers.election_builder import ElectionBuilder  # noqa: E402
from electionguard_tools.helpers.key_ceremony_orchestrator import KeyCeremonyOrchestrator  # noqa: E402


class SerialScheduler:
    """electionguard.decryption's Scheduler, without its pools: the same tasks, one after the other."""

    def schedule(self, task, arguments, with_shared_resources=False):
        return [task(*args) for args in arguments]


electionguard.decryption.Scheduler = SerialScheduler


ap = argparse.ArgumentParser()
ap.add_argument("n", type=int)
ap.add_argument("--manifest", default=None)
ap.add_argument("--out", default=None)
ap.add_argument("--rounds", type=int, default=1)
ap.add_argument("--guardians", type=int, default=5)
ap.add_argument("--quorum", type=int, default=3)
ap.add_argument("--decrypt-reps", type=int, default=2, help="decryption calls per timed round")
ap.add_argument("--decrypt-rounds", type=int, default=10, help="timed rounds of decryption (minimum taken)")
a = ap.parse_args()
rng = random.Random(7)

manifest = from_file(Manifest, a.manifest) if a.manifest else ElectionFactory.get_fake_manifest()
t = time.process_time()
details = CeremonyDetails(a.guardians, a.quorum)
guardians = KeyCeremonyOrchestrator.create_guardians(details)
kc_mediator = KeyCeremonyMediator("key-ceremony-mediator", details)
KeyCeremonyOrchestrator.perform_full_ceremony(guardians, kc_mediator)
joint_key = kc_mediator.publish_joint_key()
assert joint_key is not None
key_ceremony_s = time.process_time() - t
builder = ElectionBuilder(a.guardians, a.quorum, manifest)
builder.set_public_key(joint_key.joint_public_key)
builder.set_commitment_hash(joint_key.commitment_hash)
internal, context = builder.build()

plain = []
for i in range(a.n):
    style = internal.ballot_styles[i % len(internal.ballot_styles)]
    contests = []
    for c in internal.get_contests_for(style.object_id):
        chosen = {s.object_id for s in rng.sample(c.ballot_selections, c.number_elected)}
        contests.append(
            PlaintextBallotContest(
                c.object_id,
                [
                    PlaintextBallotSelection(s.object_id, int(s.object_id in chosen))
                    for s in c.ballot_selections
                ],
            )
        )
    plain.append(PlaintextBallot(f"bench-{i}", style.object_id, contests))

encrypt_s = validate_s = tally_s = float("inf")
for _round in range(a.rounds):
    seed = EncryptionDevice(1, 2, 3, "bench").get_hash()
    t = time.process_time()
    encrypted = []
    for p in plain:
        c = encrypt_ballot(p, internal, context, seed)
        seed = c.code
        encrypted.append(c)
    encrypt_s = min(encrypt_s, time.process_time() - t)
    submitted = [submit_ballot(c, BallotBoxState.CAST) for c in encrypted]

    t = time.process_time()
    ok = all(ballot_is_valid_for_election(b, internal, context, True) for b in submitted)
    validate_s = min(validate_s, time.process_time() - t)
    assert ok

    store = DataStore()
    for b in submitted:
        store.set(b.object_id, b)
    t = time.process_time()
    tally = CiphertextTally("bench", internal, context)
    assert tally.batch_append(store, False)
    tally_s = min(tally_s, time.process_time() - t)
peak_rss_ballots_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

present, missing, reps = guardians[0], guardians[-1], a.decrypt_reps
partial_s = compensated_s = float("inf")
for _round in range(a.decrypt_rounds):
    t = time.process_time()
    shares = [present.compute_tally_share(tally, context) for _ in range(reps)]
    partial_s = min(partial_s, (time.process_time() - t) / reps)
    assert all(shares)

    t = time.process_time()
    comp = [present.compute_compensated_tally_share(missing.id, tally, context) for _ in range(reps)]
    compensated_s = min(compensated_s, (time.process_time() - t) / reps)
    assert all(comp)

if a.out:
    to_file(manifest, "manifest", a.out)
    to_file(context, "context", a.out)
    for b in submitted:
        to_file(b, b.object_id, os.path.join(a.out, "ballots"))
    for p in plain:
        to_file(p, p.object_id, os.path.join(a.out, "plaintext"))

print(
    json.dumps(
        {
            "n": a.n,
            "encrypt_s": encrypt_s,
            "validate_s": validate_s,
            "tally_s": tally_s,
            "partial_s": partial_s,
            "compensated_s": compensated_s,
            "tally_selections": sum(len(c.selections) for c in tally.contests.values()),
            "key_ceremony_s": key_ceremony_s,
            "peak_rss_ballots_kb": peak_rss_ballots_kb,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "selections": sum(len(c.ballot_selections) for c in submitted[0].contests),
        }
    )
)
