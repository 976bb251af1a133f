"""Under the reference: check decryption shares made by our code and combine them.

usage: decrypt_with_our_shares.py RECORD_DIR SHARES_JSON
SHARES_JSON: {"tally": {guardian_id: DecryptionShare JSON}, "ballots": {ballot_id: {guardian_id: ...}}},
one share per guardian (a missing guardian's share is the reconstructed one, with recovered_parts).
Each selection share is checked with the reference's ``CiphertextDecryptionSelection.is_valid``; then
``decrypt_tally`` / ``decrypt_ballot`` combine them (they re-check every share and return None if any
fails). Prints {"tally": counts or null, "tally_invalid": [...], "ballots": {...}, "ballots_invalid": {...}}
where an invalid entry is "guardian_id/contest_id/selection_id".
"""

import json
import logging
import os
import sys

logging.disable(logging.CRITICAL)

from electionguard.ballot import SubmittedBallot  # noqa: E402
from electionguard.decrypt_with_shares import decrypt_ballot, decrypt_tally  # noqa: E402
from electionguard.decryption_share import DecryptionShare  # noqa: E402
from electionguard.election import CiphertextElectionContext  # noqa: E402
from electionguard.manifest import Manifest  # noqa: E402
from electionguard.serialize import from_file, from_raw  # noqa: E402
from electionguard.tally import PublishedCiphertextTally  # noqa: E402


def load_shares(d):
    return {gid: from_raw(DecryptionShare, json.dumps(s)) for gid, s in d.items()}


def invalid_shares(shares, ciphertexts, q):
    bad = []
    for gid, share in shares.items():
        for contest in share.contests.values():
            for sid, sel in contest.selections.items():
                ct = ciphertexts.get((contest.object_id, sid))
                if ct is None or not sel.is_valid(ct, share.public_key, q):
                    bad.append(f"{gid}/{contest.object_id}/{sid}")
    return bad


def counts(plaintext):
    if plaintext is None:
        return None
    return {
        c.object_id: {s.object_id: s.tally for s in c.selections.values()}
        for c in plaintext.contests.values()
    }


def main() -> None:
    record, shares_path = sys.argv[1:3]
    manifest = from_file(Manifest, os.path.join(record, "manifest.json"))
    context = from_file(CiphertextElectionContext, os.path.join(record, "context.json"))
    tally = from_file(PublishedCiphertextTally, os.path.join(record, "encrypted_tally.json"))
    with open(shares_path) as f:
        data = json.load(f)
    q = context.crypto_extended_base_hash
    out = {"tally": None, "tally_invalid": [], "ballots": {}, "ballots_invalid": {}}
    if data.get("tally"):
        shares = load_shares(data["tally"])
        cts = {
            (c.object_id, s.object_id): s.ciphertext
            for c in tally.contests.values()
            for s in c.selections.values()
        }
        out["tally_invalid"] = invalid_shares(shares, cts, q)
        out["tally"] = counts(decrypt_tally(tally, shares, q, manifest))
    for ballot_id, raw in (data.get("ballots") or {}).items():
        ballot = from_file(
            SubmittedBallot, os.path.join(record, "submitted_ballots", f"submitted_ballot_{ballot_id}.json")
        )
        shares = load_shares(raw)
        cts = {(c.object_id, s.object_id): s.ciphertext for c in ballot.contests for s in c.ballot_selections}
        out["ballots_invalid"][ballot_id] = invalid_shares(shares, cts, q)
        out["ballots"][ballot_id] = counts(decrypt_ballot(ballot, shares, q, manifest))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
