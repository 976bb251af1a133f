"""Check a challenged (spoiled) ballot with its opening in the reference (oracle, Python 3.10).

usage: challenge_ballot.py MANIFEST_JSON CONTEXT_JSON BALLOT_JSON PLAINTEXT_JSON NONCE_HEX
As a voter's verifier would, given the challenged ballot, the master nonce and the plaintext the service
returned:
- ``reencrypted``: the reference's ``encrypt_ballot`` of the plaintext with that nonce and the ballot's
  code seed, submitted as spoiled; the reference's encryption takes the time of day for the ballot code,
  so the code is recomputed (``get_ballot_code``) with the challenged ballot's timestamp;
- ``decrypted``: ``decrypt_ballot_with_nonce`` of the challenged ballot, {contest: {selection: vote}};
- ``valid``: ``ballot_is_valid_for_election`` of the challenged ballot.
"""

import json
import logging
import sys

logging.disable(logging.CRITICAL)

from electionguard.ballot import (  # noqa: E402
    BallotBoxState,
    PlaintextBallot,
    SubmittedBallot,
    make_ciphertext_submitted_ballot,
)
from electionguard.ballot_code import get_ballot_code  # noqa: E402
from electionguard.ballot_validator import ballot_is_valid_for_election  # noqa: E402
from electionguard.decrypt_with_secrets import decrypt_ballot_with_nonce  # noqa: E402
from electionguard.election import CiphertextElectionContext  # noqa: E402
from electionguard.encrypt import encrypt_ballot  # noqa: E402
from electionguard.group import hex_to_q  # noqa: E402
from electionguard.manifest import InternalManifest, Manifest  # noqa: E402
from electionguard.serialize import from_file, to_raw  # noqa: E402

manifest = from_file(Manifest, sys.argv[1])
context = from_file(CiphertextElectionContext, sys.argv[2])
challenged = from_file(SubmittedBallot, sys.argv[3])
plain = from_file(PlaintextBallot, sys.argv[4])
nonce = hex_to_q(sys.argv[5])
internal = InternalManifest(manifest)

ct = encrypt_ballot(plain, internal, context, challenged.code_seed, nonce)
assert ct is not None, "the reference refuses to encrypt the plaintext"
again = make_ciphertext_submitted_ballot(
    ct.object_id,
    ct.style_id,
    ct.manifest_hash,
    ct.code_seed,
    ct.contests,
    get_ballot_code(ct.code_seed, challenged.timestamp, ct.crypto_hash),
    challenged.timestamp,
    BallotBoxState.SPOILED,
)
opened = decrypt_ballot_with_nonce(
    challenged, internal, context.crypto_extended_base_hash, context.elgamal_public_key, nonce
)
assert opened is not None, "the reference cannot decrypt the challenged ballot with the nonce"
print(
    json.dumps(
        {
            "reencrypted": json.loads(to_raw(again)),
            "decrypted": {
                c.object_id: {s.object_id: s.vote for s in c.ballot_selections} for c in opened.contests
            },
            "valid": ballot_is_valid_for_election(challenged, internal, context, True),
        }
    )
)
