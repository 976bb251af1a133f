"""Reference hashes of manifests (oracle, Python 3.10).

usage: manifest_hashes.py [PATH ...]   (no path: ElectionFactory.get_fake_manifest())
Prints {path-or-"fake": {"manifest_hash", "valid", "contests": {id: hash}, "selections": {cid/sid: hash},
"manifest": <reference JSON of the manifest>}} (placeholders included in "selections").
"""

import json
import logging
import sys

logging.disable(logging.CRITICAL)

from electionguard.manifest import InternalManifest, Manifest  # noqa: E402
from electionguard.serialize import from_file, to_raw  # noqa: E402
from electionguard_tools.factories.election_factory import ElectionFactory  # noqa: E402


def describe(m: Manifest) -> dict:
    internal = InternalManifest(m)
    sels = {}
    for c in internal.contests:
        for s in list(c.ballot_selections) + list(c.placeholder_selections):
            sels[f"{c.object_id}/{s.object_id}"] = s.crypto_hash().to_hex()
    return {
        "manifest_hash": m.crypto_hash().to_hex(),
        "valid": m.is_valid(),
        "contests": {c.object_id: c.crypto_hash().to_hex() for c in internal.contests},
        "selections": sels,
        "manifest": json.loads(to_raw(m)),
    }


out = {}
for path in sys.argv[1:] or ["fake"]:
    m = ElectionFactory.get_fake_manifest() if path == "fake" else from_file(Manifest, path)
    out[path] = describe(m)
print(json.dumps(out))
