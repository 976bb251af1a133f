"""Encrypt ballots in the reference with known nonces (oracle, Python 3.10).

usage: encrypt_ballots.py MANIFEST_JSON N SEED
One key (secret 2^200 + SEED), N ballots over the manifest's styles in turn, with seeded random
choices from none up to one more than the contest allows (null votes, undervotes, overvotes) and a
write-in on the first ballot; master nonce of ballot i: 1000 * SEED + i.
Prints {"context": ..., "ballots": [{"plaintext": ..., "ciphertext": ...}]} (reference JSON).
"""

import json
import logging
import random
import sys

logging.disable(logging.CRITICAL)

from electionguard.ballot import PlaintextBallot, PlaintextBallotContest, PlaintextBallotSelection  # noqa: E402
from electionguard.elgamal import elgamal_keypair_from_secret  # noqa: E402
from electionguard.encrypt import EncryptionDevice, encrypt_ballot  # noqa: E402
from electionguard.group import TWO_MOD_Q, ElementModQ  # noqa: E402
from electionguard.manifest import Manifest  # noqa: E402
from electionguard.serialize import from_file, to_raw  # noqa: E402
from electionguard_tools.helpers.election_builder import ElectionBuilder  # noqa: E402

manifest = from_file(Manifest, sys.argv[1])
n, seed = int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
keys = elgamal_keypair_from_secret(ElementModQ(2**200 + seed))
builder = ElectionBuilder(1, 1, manifest)
builder.set_public_key(keys.public_key)
builder.set_commitment_hash(TWO_MOD_Q)
internal, context = builder.build()

code = EncryptionDevice(7, 8, 9, "oracle").get_hash()
out = []
for i in range(n):
    style = internal.ballot_styles[i % len(internal.ballot_styles)]
    contests = []
    for c in internal.get_contests_for(style.object_id):
        k = rng.randint(0, min(c.number_elected + 1, len(c.ballot_selections)))
        chosen = {s.object_id for s in rng.sample(c.ballot_selections, k)}
        sels = [
            PlaintextBallotSelection(s.object_id, 1) for s in c.ballot_selections if s.object_id in chosen
        ]
        if i == 0 and sels:
            sels[0] = PlaintextBallotSelection(sels[0].object_id, 1, False, "Write-in name")
        contests.append(PlaintextBallotContest(c.object_id, sels))
    plain = PlaintextBallot(f"oracle-{seed}-{i}", style.object_id, contests)
    ct = encrypt_ballot(plain, internal, context, code, ElementModQ(1000 * seed + i))
    code = ct.code
    out.append({"plaintext": json.loads(to_raw(plain)), "ciphertext": json.loads(to_raw(ct))})
print(json.dumps({"context": json.loads(to_raw(context)), "ballots": out}))
