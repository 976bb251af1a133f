"""Validate submitted ballots in the reference (oracle, Python 3.10).

usage: validate_ballots.py MANIFEST_JSON CONTEXT_JSON BALLOT_JSON...
Prints {ballot_id: {"valid": bool, "style_valid": bool, "roundtrip": bool}}: ``valid`` is
``ballot_is_valid_for_election(ballot, internal_manifest, context, should_validate=True)``, as the
reference's ballot box runs it before casting; ``roundtrip`` says the file re-serialises identically.
"""

import json
import logging
import sys

logging.disable(logging.CRITICAL)

from electionguard.ballot import SubmittedBallot  # noqa: E402
from electionguard.ballot_validator import ballot_is_valid_for_election, ballot_is_valid_for_style  # noqa: E402
from electionguard.election import CiphertextElectionContext  # noqa: E402
from electionguard.manifest import InternalManifest, Manifest  # noqa: E402
from electionguard.serialize import from_file, to_raw  # noqa: E402

manifest = from_file(Manifest, sys.argv[1])
context = from_file(CiphertextElectionContext, sys.argv[2])
internal = InternalManifest(manifest)
out = {}
for path in sys.argv[3:]:
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    ballot = from_file(SubmittedBallot, path)
    out[ballot.object_id] = {
        "valid": ballot_is_valid_for_election(ballot, internal, context, True),
        "style_valid": ballot_is_valid_for_style(ballot, internal),
        "roundtrip": json.loads(to_raw(ballot)) == raw,
    }
print(json.dumps(out))
