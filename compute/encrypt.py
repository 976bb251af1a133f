"""Ballot encryption, as the reference's ``electionguard.encrypt.encrypt_ballot``.

Same nonce derivation (so the same master nonce gives the same ciphertexts and proofs as the
reference), the same placeholder filling, the same encrypted contest data (hashed ElGamal of the
contest's error and write-ins) and the same ballot code chaining. g and the election key K go through
fixed-base tables, which is where the speed comes from.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from gmpy2 import mpz

from compute.ballot import (
    BallotBoxState,
    CiphertextBallot,
    CiphertextBallotContest,
    CiphertextBallotSelection,
    PlaintextBallot,
    PlaintextBallotContest,
    PlaintextBallotSelection,
    SubmittedBallot,
    ballot_crypto_hash,
    contest_crypto_hash,
    get_ballot_code,
    make_submitted,
    selection_crypto_hash,
)
from compute.constants import G, P, Q
from compute.context import ElectionContext
from compute.elgamal import Ciphertext
from compute.fixedbase import encryption_pow
from compute.group import rand_q
from compute.hashed_elgamal import hashed_elgamal_encrypt
from compute.hashing import hash_elems
from compute.manifest import ContestDescriptionWithPlaceholders, InternalManifest, SelectionDescription
from compute.selection_proofs import (
    make_constant_chaum_pedersen,
    make_disjunctive_chaum_pedersen,
    nonce_at,
    nonces,
    verify_constant,
    verify_disjunctive,
)


class EncryptionError(ValueError):
    """The plaintext ballot does not fit the manifest (the reference returns None in these cases)."""


def _contest_data_bytes(
    error: str | None, error_data: list[str] | None, write_ins: dict[str, str] | None
) -> bytes:
    # json.dumps of the reference's ContestData dataclass, padded to 512 bytes by its byte_padding
    raw = json.dumps({"error": error, "error_data": error_data, "write_ins": write_ins}).encode("utf-8")
    if len(raw) > 510:
        raise EncryptionError("contest extended data exceeds 510 bytes")
    return (510 - len(raw)).to_bytes(2, "big") + raw + bytes(510 - len(raw))


@dataclass(frozen=True, slots=True)
class _Keys:
    k: mpz
    q_ext: mpz


def _encrypt_selection(
    object_id: str,
    vote: int,
    desc: SelectionDescription,
    desc_hash: mpz,
    keys: _Keys,
    contest_nonce: mpz,
    is_placeholder: bool,
) -> CiphertextBallotSelection:
    if vote not in (0, 1):
        raise EncryptionError(f"selection {object_id}: only votes of 0 or 1 are supported")
    seq = nonces(desc_hash, contest_nonce)
    nonce = nonce_at(seq, desc.sequence_order)
    proof_seed = nonce_at(seq, 0)
    pad = encryption_pow(G, nonce)
    data = (G if vote else 1) * encryption_pow(keys.k, nonce) % P
    ct = Ciphertext(pad, data)
    proof = make_disjunctive_chaum_pedersen(ct, nonce, keys.k, keys.q_ext, proof_seed, vote)
    return CiphertextBallotSelection(
        object_id,
        desc.sequence_order,
        desc_hash,
        ct,
        selection_crypto_hash(object_id, desc_hash, ct),
        is_placeholder,
        nonce,
        proof,
    )


def _contest_status(
    contest: PlaintextBallotContest, desc: ContestDescriptionWithPlaceholders
) -> tuple[str | None, list[str] | None]:
    """The reference's ``PlaintextBallotContest.valid``: (error, error_data) or EncryptionError."""
    ids = {s.object_id for s in desc.ballot_selections}
    if (
        contest.object_id != desc.object_id
        or len(contest.ballot_selections) > len(desc.ballot_selections)
        or not desc.is_valid()
    ):
        raise EncryptionError(f"invalid format of contest or description for contest {contest.object_id}")
    for s in contest.ballot_selections:
        if s.object_id not in ids:
            raise EncryptionError(f"invalid selection id {s.object_id} on contest {contest.object_id}")
    selected = [s.object_id for s in contest.ballot_selections if s.vote > 0]
    total_votes = sum(s.vote for s in contest.ballot_selections)
    if len(selected) < 1:
        return "nullvote", None
    if len(selected) < desc.number_elected:
        return "undervote", None
    if len(selected) > desc.number_elected:
        return "overvote", selected
    if desc.votes_allowed is not None:
        if total_votes > desc.votes_allowed:
            return "overvote", selected
        if len(selected) < desc.votes_allowed:
            raise EncryptionError(
                f"on contest {contest.object_id}: only n-of-m style elections are supported"
            )
    return None, None


def _encrypt_contest(
    contest: PlaintextBallotContest,
    desc: ContestDescriptionWithPlaceholders,
    internal: InternalManifest,
    keys: _Keys,
    nonce_seed: mpz,
) -> CiphertextBallotContest:
    error, error_data = _contest_status(contest, desc)
    contest_hash = desc.description_hash
    seq = nonces(contest_hash, nonce_seed)
    contest_nonce = nonce_at(seq, desc.sequence_order)
    proof_seed = nonce_at(seq, 0)

    selections: list[CiphertextBallotSelection] = []
    count = 0
    by_id: dict[str, PlaintextBallotSelection] = {}
    for given in contest.ballot_selections:
        by_id.setdefault(given.object_id, given)
    for d in desc.ballot_selections:
        chosen = by_id.get(d.object_id)
        if chosen is not None and error != "overvote":
            count += chosen.vote
            vote = chosen.vote
        else:
            vote = 0  # not chosen, or an overvote: counted as nothing, placeholders fill the limit
        h = internal.selection_hashes[(desc.object_id, d.object_id)]
        selections.append(_encrypt_selection(d.object_id, vote, d, h, keys, contest_nonce, False))
    for d in desc.placeholder_selections:
        vote = 1 if count < desc.number_elected else 0
        count += vote
        h = internal.selection_hashes[(desc.object_id, d.object_id)]
        selections.append(_encrypt_selection(d.object_id, vote, d, h, keys, contest_nonce, True))

    write_ins = {s.object_id: s.write_in for s in contest.ballot_selections if s.write_in is not None} or None
    data_nonce = nonce_at(nonces(contest_nonce, "constant-extended-data"), 0)
    # both powers from the encryption tables (g_pow_p's 10-bit table takes 26 multiplies, not 19)
    extended = hashed_elgamal_encrypt(
        _contest_data_bytes(error, error_data, write_ins),
        data_nonce,
        keys.k,
        keys.q_ext,
        key_power=encryption_pow(keys.k, data_nonce),
        pad=encryption_pow(G, data_nonce),
    )
    pad, data = mpz(1), mpz(1)
    for sel in selections:
        pad = pad * sel.ciphertext.pad % P
        data = data * sel.ciphertext.data % P
    acc = Ciphertext(pad, data)
    aggregate = mpz(sum(s.nonce for s in selections if s.nonce is not None) % Q)
    proof = make_constant_chaum_pedersen(acc, desc.number_elected, aggregate, keys.k, proof_seed, keys.q_ext)
    sel_tuple = tuple(selections)
    return CiphertextBallotContest(
        contest.object_id,
        desc.sequence_order,
        contest_hash,
        sel_tuple,
        acc,
        contest_crypto_hash(contest.object_id, sel_tuple, contest_hash),
        contest_nonce,
        proof,
        extended,
    )


def encrypt_ballot(
    ballot: PlaintextBallot,
    internal_manifest: InternalManifest,
    context: ElectionContext,
    encryption_seed: mpz,
    nonce_seed: mpz | None = None,
    should_verify_proofs: bool = False,
    timestamp: int | None = None,
) -> CiphertextBallot:
    """Encrypt a plaintext ballot.

    ``encryption_seed`` is the previous ballot's code (or the device hash): the ballot code chains
    from it. ``nonce_seed`` is the master nonce (random if None); the same one gives the same
    encryption as the reference. ``timestamp`` defaults to now (seconds since the epoch).
    Raises EncryptionError where the reference would return None.
    """
    try:
        style = internal_manifest.get_ballot_style(ballot.style_id)
    except KeyError as e:
        raise EncryptionError(str(e)) from None
    master = mpz(nonce_seed) if nonce_seed is not None else rand_q()
    seed = hash_elems(internal_manifest.manifest_hash, ballot.object_id, master)
    keys = _Keys(context.elgamal_public_key, context.crypto_extended_base_hash)

    by_id: dict[str, PlaintextBallotContest] = {}
    for given in ballot.contests:
        by_id.setdefault(given.object_id, given)
    contests = []
    for desc in internal_manifest.get_contests_for(style.object_id):
        pc = by_id.get(desc.object_id) or PlaintextBallotContest(
            desc.object_id, tuple(PlaintextBallotSelection(s.object_id, 0) for s in desc.ballot_selections)
        )
        contests.append(_encrypt_contest(pc, desc, internal_manifest, keys, seed))
    ctuple = tuple(contests)
    h = ballot_crypto_hash(ballot.object_id, internal_manifest.manifest_hash, ctuple)
    ts = int(time.time()) if timestamp is None else timestamp
    out = CiphertextBallot(
        ballot.object_id,
        ballot.style_id,
        internal_manifest.manifest_hash,
        encryption_seed,
        ctuple,
        get_ballot_code(encryption_seed, ts, h),
        ts,
        h,
        master,
    )
    if should_verify_proofs:
        for c in out.contests:
            for s in c.ballot_selections:
                if s.proof is None or not verify_disjunctive(s.proof, s.ciphertext, keys.k, keys.q_ext):
                    raise EncryptionError(f"selection proof failed for {c.object_id}/{s.object_id}")
            if c.proof is None or not verify_constant(c.proof, c.ciphertext_accumulation, keys.k, keys.q_ext):
                raise EncryptionError(f"contest proof failed for {c.object_id}")
    return out


def submit(ballot: CiphertextBallot, state: BallotBoxState) -> SubmittedBallot:
    """Alias of ``compute.ballot.make_submitted``."""
    return make_submitted(ballot, state)
