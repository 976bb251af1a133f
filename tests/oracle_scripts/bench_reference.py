"""Time the reference on the hot paths (oracle, Python 3.10): encryption, validation, tally.

usage: bench_reference.py N [--manifest PATH] [--out DIR] [--rounds R]
One key (secret 2^200 + 1: the costs do not depend on the number of guardians), N ballots with seeded
random choices. Times: encrypt_ballot per ballot; ballot_is_valid_for_election(should_validate=True)
per ballot (what BallotBox.cast runs); CiphertextTally.batch_append with should_validate=False
(accumulation only: with True it validates again, in a process pool). Process CPU time.
With --out, writes the manifest, context and the submitted ballots there so the same ballots can be
validated by ours. Each time is the minimum over R rounds (steadier on a shared machine).
Prints {"n", "encrypt_s", "validate_s", "tally_s", "peak_rss_kb", "selections"}.
"""

import argparse
import json
import logging
import os
import random
import resource
import time

logging.disable(logging.CRITICAL)

from electionguard.ballot import (  # noqa: E402
    BallotBoxState,
    PlaintextBallot,
    PlaintextBallotContest,
    PlaintextBallotSelection,
)
from electionguard.ballot_box import submit_ballot  # noqa: E402
from electionguard.ballot_validator import ballot_is_valid_for_election  # noqa: E402
from electionguard.data_store import DataStore  # noqa: E402
from electionguard.elgamal import elgamal_keypair_from_secret  # noqa: E402
from electionguard.encrypt import EncryptionDevice, encrypt_ballot  # noqa: E402
from electionguard.group import TWO_MOD_Q, ElementModQ  # noqa: E402
from electionguard.manifest import Manifest  # noqa: E402
from electionguard.serialize import from_file, to_file  # noqa: E402
from electionguard.tally import CiphertextTally  # noqa: E402
from electionguard_tools.factories.election_factory import ElectionFactory  # noqa: E402
from electionguard_tools.helpers.election_builder import ElectionBuilder  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("n", type=int)
ap.add_argument("--manifest", default=None)
ap.add_argument("--out", default=None)
ap.add_argument("--rounds", type=int, default=1)
a = ap.parse_args()
rng = random.Random(7)

manifest = from_file(Manifest, a.manifest) if a.manifest else ElectionFactory.get_fake_manifest()
keys = elgamal_keypair_from_secret(ElementModQ(2**200 + 1))
builder = ElectionBuilder(1, 1, manifest)
builder.set_public_key(keys.public_key)
builder.set_commitment_hash(TWO_MOD_Q)
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
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "selections": sum(len(c.ballot_selections) for c in submitted[0].contests),
        }
    )
)
