"""Check a whole election record; every problem names the object that fails.

Checks: the constants; the guardians' Schnorr proofs, joint key, commitment hash and the context's
hashes; every submitted ballot's proofs (compute.validate), and that no ballot repeats a selection
ciphertext of another (compute.fingerprints: a clone under a new id passes every proof); the encrypted
tally against the product of the cast ballots; for the tally and every spoiled ballot: one share per
guardian, every Chaum-Pedersen proof (all of them in one batch, bisected only if the batch fails), the
recovery keys (recomputed from the missing guardian's commitments) and the Lagrange reconstruction of
missing guardians' shares (also batched), and g^t = B / prod M_i for each selection.
"""

from __future__ import annotations

from typing import Any

from gmpy2 import mpz

from compute.ballot import SubmittedBallot
from compute.chaum_pedersen import ShareStatement, verify_shares
from compute.constants import ONE, P
from compute.context import make_context
from compute.decryption import compute_lagrange_coefficients, compute_recovery_public_key
from compute.elgamal import Ciphertext
from compute.fingerprints import find_repeats, repeat_message
from compute.group import g_pow_p
from compute.guardian import GuardianRecord
from compute.keyceremony import commitment_hash, joint_public_key, verify_public_key
from compute.manifest import InternalManifest
from compute.plaintext_tally import PlaintextTally
from compute.record import ElectionRecord, standard_constants
from compute.share_checks import Reconstruction, reconstruction_problems
from compute.tally import TallyError, accumulate, new_tally
from compute.validate import validate_ballots


class _ShareChecker:
    """Collects the proofs of every plaintext (tally, spoiled ballots) to batch them at the end."""

    def __init__(self, guardians: list[GuardianRecord]) -> None:
        self.by_id = {g.guardian_id: g for g in guardians}
        self.seq = {g.guardian_id: g.sequence_order for g in guardians}
        self.statements: list[ShareStatement] = []
        self.reconstructions: list[Reconstruction] = []
        self.problems: list[str] = []
        self._recovery: dict[tuple[str, str], mpz] = {}
        self._lagrange: dict[frozenset[str], dict[str, mpz]] = {}
        self.available_sets: set[frozenset[str]] = set()

    def recovery_key(self, present: str, missing: str) -> mpz:
        key = (present, missing)
        if key not in self._recovery:
            self._recovery[key] = compute_recovery_public_key(self.seq[present], self.by_id[missing])
        return self._recovery[key]

    def lagrange(self, ids: frozenset[str]) -> dict[str, mpz]:
        if ids not in self._lagrange:
            self._lagrange[ids] = compute_lagrange_coefficients((g, self.seq[g]) for g in ids)
        return self._lagrange[ids]

    def plaintext(
        self, label: str, plaintext: PlaintextTally, ciphertexts: dict[tuple[str, str], Ciphertext]
    ) -> None:
        seen = set()
        for cid, contest in plaintext.contests.items():
            for sid, sel in contest.selections.items():
                where = f"{label}/{cid}/{sid}"
                seen.add((cid, sid))
                ct = ciphertexts.get((cid, sid))
                if ct is None:
                    self.problems.append(f"{where}: not in the encrypted object")
                    continue
                if sel.message != ct:
                    self.problems.append(f"{where}: decrypted message differs from the encrypted one")
                    continue
                self._selection(where, sel, ct)
        if missing := set(ciphertexts) - seen:
            self.problems.append(f"{label}: selections not decrypted: {sorted(missing)[:5]}")

    def _selection(self, where: str, sel: Any, ct: Ciphertext) -> None:
        ids = [s.guardian_id for s in sel.shares]
        if sorted(ids) != sorted(self.by_id):
            self.problems.append(f"{where}: shares from {sorted(ids)}, expected one per guardian")
            return
        product = ONE
        for share in sel.shares:
            gid = share.guardian_id
            product = product * share.share % P
            if share.proof is not None and share.recovered_parts is None:
                self.statements.append(
                    ShareStatement(
                        f"guardian {gid}: share of {where}",
                        ct,
                        self.by_id[gid].election_public_key,
                        share.share,
                        share.proof,
                    )
                )
            elif share.recovered_parts is not None and share.proof is None:
                self._reconstructed(where, gid, share, ct)
            else:
                self.problems.append(f"guardian {gid}: share of {where} needs a proof or recovered parts")
        if g_pow_p(sel.tally) != sel.value:
            self.problems.append(f"{where}: value is not g^{sel.tally}")
        elif sel.value * product % P != ct.data:
            self.problems.append(f"{where}: g^tally times the shares is not the ciphertext's data")

    def _reconstructed(self, where: str, missing: str, share: Any, ct: Ciphertext) -> None:
        parts = share.recovered_parts
        unknown = [g for g in parts if g not in self.by_id or g == missing]
        if unknown:
            self.problems.append(
                f"missing guardian {missing}: parts from unexpected guardians {unknown} in {where}"
            )
            return
        ids = frozenset(parts)
        self.available_sets.add(ids)
        for g, part in parts.items():
            if part.recovery_key != self.recovery_key(g, missing):
                self.problems.append(
                    f"guardian {g}: wrong recovery key for missing guardian {missing} in {where}"
                )
                continue
            self.statements.append(
                ShareStatement(
                    f"guardian {g}: compensated share for missing guardian {missing} of {where}",
                    ct,
                    part.recovery_key,
                    part.share,
                    part.proof,
                )
            )
        self.reconstructions.append(
            Reconstruction(
                f"missing guardian {missing}: share of {where} is not the Lagrange reconstruction",
                share.share,
                {g: p.share for g, p in parts.items()},
                self.lagrange(ids),
            )
        )


def verify_guardians(record: ElectionRecord) -> list[str]:
    problems = []
    ctx = record.context
    if record.constants != standard_constants():
        problems.append("constants: not the standard group")
    if len(record.guardians) != ctx.number_of_guardians:
        problems.append(f"guardians: {len(record.guardians)} records for {ctx.number_of_guardians} guardians")
    for g in record.guardians:
        problems += verify_public_key(g.public_key(), ctx.quorum)
    if joint_public_key(record.guardians) != ctx.elgamal_public_key:
        problems.append("context: elgamal_public_key is not the product of the guardians' keys")
    if commitment_hash(record.guardians) != ctx.commitment_hash:
        problems.append("context: commitment_hash does not match the guardians' commitments")
    manifest_hash = record.manifest.crypto_hash()
    if manifest_hash != ctx.manifest_hash:
        problems.append("context: manifest_hash is not the manifest's hash")
    expected = make_context(
        ctx.number_of_guardians, ctx.quorum, ctx.elgamal_public_key, ctx.commitment_hash, ctx.manifest_hash
    )
    if (expected.crypto_base_hash, expected.crypto_extended_base_hash) != (
        ctx.crypto_base_hash,
        ctx.crypto_extended_base_hash,
    ):
        problems.append("context: crypto_base_hash or crypto_extended_base_hash is wrong")
    return problems


def verify_record(record: ElectionRecord, workers: int = 1) -> list[str]:
    """All problems found in the record (empty when it verifies)."""
    problems = verify_guardians(record)
    ctx = record.context
    internal = InternalManifest.from_manifest(record.manifest)
    if ctx.manifest_hash == internal.manifest_hash:
        problems += [
            f.message for f in validate_ballots(record.submitted_ballots, internal, ctx, workers=workers)
        ]
    problems += [repeat_message(b, original) for b, original in find_repeats(record.submitted_ballots)]
    cast: list[SubmittedBallot] = []
    spoiled: list[SubmittedBallot] = []
    for b in record.submitted_ballots:
        state = getattr(b.state, "name", str(b.state))
        (cast if state == "CAST" else spoiled if state == "SPOILED" else []).append(b)

    shares = _ShareChecker(record.guardians)
    if record.encrypted_tally is None:
        problems.append("encrypted_tally.json: missing")
    else:
        expected = new_tally(internal, record.encrypted_tally.object_id)
        try:
            accumulate(expected, cast)
        except TallyError as e:
            problems.append(f"encrypted tally: {e}")
        for cid, contest in expected.contests.items():
            got = record.encrypted_tally.contests.get(cid)
            for sid, sel in contest.selections.items():
                g = None if got is None else got.selections.get(sid)
                if g is None or g.ciphertext != sel.ciphertext or g.description_hash != sel.description_hash:
                    problems.append(
                        f"encrypted tally/{cid}/{sid}: not the product of the {len(cast)} cast ballots"
                    )
        if set(record.encrypted_tally.contests) != set(expected.contests):
            problems.append("encrypted tally: contests differ from the manifest's")
        if record.tally is None:
            problems.append("tally.json: missing")
        else:
            cts = {(cid, s.object_id): s.ciphertext for cid, s in record.encrypted_tally.selections()}
            shares.plaintext(f"tally {record.tally.object_id}", record.tally, cts)

    described = {(c.object_id, s.object_id) for c in internal.contests for s in c.ballot_selections}
    for b in spoiled:
        plain = record.spoiled_ballots.get(b.object_id)
        if plain is None:
            problems.append(f"spoiled ballot {b.object_id}: no decryption in spoiled_ballots/")
            continue
        cts = {
            (c.object_id, s.object_id): s.ciphertext
            for c in b.contests
            for s in c.ballot_selections
            if (c.object_id, s.object_id) in described
        }
        shares.plaintext(f"spoiled ballot {b.object_id}", plain, cts)
    for ballot_id in set(record.spoiled_ballots) - {b.object_id for b in spoiled}:
        problems.append(f"spoiled ballot {ballot_id}: decrypted but not a spoiled submitted ballot")

    if record.lagrange_coefficients and len(shares.available_sets) == 1:
        (ids,) = shares.available_sets
        if shares.lagrange(ids) != record.lagrange_coefficients:
            problems.append("coefficients.json: not the Lagrange coefficients of the available guardians")
    problems += shares.problems
    problems += reconstruction_problems(shares.reconstructions)
    problems += verify_shares(shares.statements, ctx.crypto_extended_base_hash)
    return problems
