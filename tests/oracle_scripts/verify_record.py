"""Verify a whole election record with the reference electionguard 1.4.0 (oracle, Python 3.10), timed.

usage: verify_record.py RECORD_DIR

The reference has no record verifier of its own (no ``electionguard_verify`` in 1.4.0), so this script
runs, with the reference's own functions, the checks ``compute.verify`` makes on a record:

- guardians: every Schnorr proof of every coefficient commitment (``SchnorrProof.is_valid``), the joint key
  and the commitment hash (``combine_election_public_keys``) and the context's base and extended base
  hashes (``make_ciphertext_election_context``) against the context;
- every submitted ballot: ``ballot_is_valid_for_election(should_validate=True)`` (its style, every
  selection's disjunctive and every contest's constant Chaum-Pedersen proof: what ``BallotBox.cast`` runs);
- the encrypted tally against the product of the cast ballots (``elgamal_add``, per selection);
- the tally and every spoiled ballot's decryption: one share per guardian on every selection,
  ``CiphertextDecryptionSelection.is_valid`` on each (the guardian's Chaum-Pedersen proof, or every
  compensating part's proof), each part's recovery key against ``compute_recovery_public_key`` from the
  missing guardian's commitments, the missing share against the Lagrange reconstruction of its parts
  (``compute_lagrange_coefficients_for_guardians``), ``g^tally`` against the selection's value and
  ``value * prod(shares) = data``; the coefficients file against the Lagrange coefficients.

Not made here (ours makes them, they cost little): the clone and shared-tracking-code checks, the record's
layout and ids.

All serial, in this process (no pool: none of these functions starts one). The last stdout line is JSON:
{"load_s", "check_s", "total_s" (process CPU time), "wall_s", "peak_rss_kb", "ballots", "cast", "spoiled",
"tally_selections", "spoiled_selections", "share_proofs", "problems" (count), "first_problems"}.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import resource
import sys
import time

logging.disable(logging.CRITICAL)

from electionguard.ballot import BallotBoxState, SubmittedBallot  # noqa: E402
from electionguard.ballot_validator import ballot_is_valid_for_election  # noqa: E402
from electionguard.decryption import (  # noqa: E402
    compute_lagrange_coefficients_for_guardians,
    compute_recovery_public_key,
)
from electionguard.election import CiphertextElectionContext, make_ciphertext_election_context  # noqa: E402
from electionguard.election_polynomial import LagrangeCoefficientsRecord  # noqa: E402
from electionguard.elgamal import elgamal_add  # noqa: E402
from electionguard.group import g_pow_p, mult_p, pow_p  # noqa: E402
from electionguard.guardian import GuardianRecord  # noqa: E402
from electionguard.key_ceremony import ElectionPublicKey, combine_election_public_keys  # noqa: E402
from electionguard.manifest import InternalManifest, Manifest  # noqa: E402
from electionguard.serialize import from_file  # noqa: E402
from electionguard.tally import PlaintextTally, PublishedCiphertextTally  # noqa: E402


def public_key(g: GuardianRecord) -> ElectionPublicKey:
    return ElectionPublicKey(
        g.guardian_id, g.sequence_order, g.election_public_key, g.election_commitments, g.election_proofs
    )


class Checker:
    def __init__(self, keys: dict[str, ElectionPublicKey], q) -> None:
        self.keys = keys
        self.q = q
        self.problems: list[str] = []
        self.share_proofs = 0
        self.selections = 0
        self._recovery: dict[tuple[str, str], object] = {}
        self._lagrange: dict[frozenset[str], dict] = {}
        self.available_sets: set[frozenset[str]] = set()

    def recovery(self, present: str, missing: str):
        if (present, missing) not in self._recovery:
            self._recovery[(present, missing)] = compute_recovery_public_key(
                self.keys[present], self.keys[missing]
            )
        return self._recovery[(present, missing)]

    def lagrange(self, ids: frozenset[str]) -> dict:
        if ids not in self._lagrange:
            self._lagrange[ids] = compute_lagrange_coefficients_for_guardians([self.keys[g] for g in ids])
        return self._lagrange[ids]

    def plaintext(self, label: str, plain: PlaintextTally, cts: dict) -> None:
        seen = set()
        for cid, contest in plain.contests.items():
            for sid, sel in contest.selections.items():
                where = f"{label}/{cid}/{sid}"
                seen.add((cid, sid))
                ct = cts.get((cid, sid))
                if ct is None or sel.message != ct:
                    self.problems.append(f"{where}: not the encrypted selection")
                    continue
                self.selections += 1
                self.selection(where, sel, ct)
        if set(cts) - seen:
            self.problems.append(f"{label}: selections not decrypted")

    def selection(self, where: str, sel, ct) -> None:
        if sorted(s.guardian_id for s in sel.shares) != sorted(self.keys):
            self.problems.append(f"{where}: not one share per guardian")
            return
        for share in sel.shares:
            gid = share.guardian_id
            self.share_proofs += 1 if share.proof is not None else len(share.recovered_parts or {})
            if not share.is_valid(ct, self.keys[gid].key, self.q):
                self.problems.append(f"{where}: guardian {gid}'s share is not valid")
                continue
            if share.recovered_parts is not None:
                parts = share.recovered_parts
                ids = frozenset(parts)
                self.available_sets.add(ids)
                for g, part in parts.items():
                    if part.recovery_key != self.recovery(g, gid):
                        self.problems.append(f"{where}: wrong recovery key of {g} for {gid}")
                coefficients = self.lagrange(ids)
                rebuilt = mult_p(*[pow_p(part.share, coefficients[g]) for g, part in parts.items()])
                if rebuilt != share.share:
                    self.problems.append(f"{where}: {gid}'s share is not the Lagrange reconstruction")
        if g_pow_p(sel.tally) != sel.value:
            self.problems.append(f"{where}: value is not g^tally")
        elif mult_p(sel.value, *[s.share for s in sel.shares]) != ct.data:
            self.problems.append(f"{where}: g^tally times the shares is not the data")


def main() -> None:
    record = sys.argv[1]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    manifest = from_file(Manifest, os.path.join(record, "manifest.json"))
    context = from_file(CiphertextElectionContext, os.path.join(record, "context.json"))
    guardians = [
        from_file(GuardianRecord, p) for p in sorted(glob.glob(os.path.join(record, "guardians", "*")))
    ]
    ballots = [
        from_file(SubmittedBallot, p)
        for p in sorted(glob.glob(os.path.join(record, "submitted_ballots", "*")))
    ]
    spoiled = {
        t.object_id: t
        for t in (
            from_file(PlaintextTally, p)
            for p in sorted(glob.glob(os.path.join(record, "spoiled_ballots", "*")))
        )
    }
    encrypted = from_file(PublishedCiphertextTally, os.path.join(record, "encrypted_tally.json"))
    tally = from_file(PlaintextTally, os.path.join(record, "tally.json"))
    coefficients = from_file(LagrangeCoefficientsRecord, os.path.join(record, "coefficients.json"))
    cpu1 = time.process_time()

    problems: list[str] = []
    q = context.crypto_extended_base_hash
    keys = {g.guardian_id: public_key(g) for g in guardians}
    for g in guardians:
        if not all(p.is_valid() for p in g.election_proofs):
            problems.append(f"guardian {g.guardian_id}: a Schnorr proof fails")
    joint = combine_election_public_keys(list(keys.values()))
    if (joint.joint_public_key, joint.commitment_hash) != (
        context.elgamal_public_key,
        context.commitment_hash,
    ):
        problems.append("context: joint key or commitment hash")
    expected = make_ciphertext_election_context(
        context.number_of_guardians,
        context.quorum,
        context.elgamal_public_key,
        context.commitment_hash,
        manifest.crypto_hash(),
    )
    if (expected.crypto_base_hash, expected.crypto_extended_base_hash) != (context.crypto_base_hash, q):
        problems.append("context: base hashes")

    internal = InternalManifest(manifest)
    products: dict = {}
    cast = 0
    for b in ballots:
        if not ballot_is_valid_for_election(b, internal, context, True):
            problems.append(f"ballot {b.object_id}: not valid")
        if b.state == BallotBoxState.CAST:
            cast += 1
            for c in b.contests:
                for s in c.ballot_selections:
                    if not s.is_placeholder_selection:
                        key = (c.object_id, s.object_id)
                        products[key] = (
                            elgamal_add(products[key], s.ciphertext) if key in products else s.ciphertext
                        )
    for c in encrypted.contests.values():
        for s in c.selections.values():
            if products.get((c.object_id, s.object_id)) != s.ciphertext:
                problems.append(f"encrypted tally/{c.object_id}/{s.object_id}: not the cast product")

    checker = Checker(keys, q)
    tally_cts = {
        (c.object_id, s.object_id): s.ciphertext
        for c in encrypted.contests.values()
        for s in c.selections.values()
    }
    checker.plaintext("tally", tally, tally_cts)
    tally_selections = checker.selections
    by_id = {b.object_id: b for b in ballots}
    spoiled_count = 0
    for b in ballots:
        if b.state != BallotBoxState.SPOILED:
            continue
        spoiled_count += 1
        plain = spoiled.get(b.object_id)
        if plain is None:
            problems.append(f"spoiled ballot {b.object_id}: no decryption")
            continue
        cts = {
            (c.object_id, s.object_id): s.ciphertext
            for c in b.contests
            for s in c.ballot_selections
            if not s.is_placeholder_selection
        }
        checker.plaintext(f"spoiled ballot {b.object_id}", plain, cts)
    problems += [f"spoiled ballot {i}: not a spoiled submitted ballot" for i in spoiled if i not in by_id]
    if len(checker.available_sets) == 1:
        (ids,) = checker.available_sets
        if checker.lagrange(ids) != coefficients.coefficients:
            problems.append("coefficients.json: not the Lagrange coefficients")
    problems += checker.problems
    cpu2 = time.process_time()

    out = {
        "load_s": cpu1 - cpu0,
        "check_s": cpu2 - cpu1,
        "total_s": cpu2 - cpu0,
        "wall_s": time.perf_counter() - wall0,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "ballots": len(ballots),
        "cast": cast,
        "spoiled": spoiled_count,
        "tally_selections": tally_selections,
        "spoiled_selections": checker.selections - tally_selections,
        "share_proofs": checker.share_proofs,
        "problems": len(problems),
        "first_problems": problems[:5],
    }
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
