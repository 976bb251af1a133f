"""A one-key election made by our own code for the ballot, proof and validation unit tests."""

from __future__ import annotations

from dataclasses import dataclass, replace

import gmpy2
from gmpy2 import mpz

from compute.ballot import (
    BallotBoxState,
    CiphertextBallotContest,
    PlaintextBallot,
    PlaintextBallotContest,
    PlaintextBallotSelection,
    SubmittedBallot,
    contest_crypto_hash,
    get_ballot_code,
    make_submitted,
    selection_crypto_hash,
)
from compute.constants import P
from compute.context import ElectionContext, make_context
from compute.elgamal import Ciphertext, add, encrypt
from compute.encrypt import encrypt_ballot
from compute.group import g_pow_p, rand_q
from compute.manifest import (
    BallotStyle,
    Candidate,
    ContestDescription,
    GeopoliticalUnit,
    InternalManifest,
    Manifest,
    SelectionDescription,
    build_simple_manifest,
)


@dataclass
class Election:
    secret: mpz
    manifest: Manifest
    internal: InternalManifest
    context: ElectionContext


def two_contest_manifest() -> Manifest:
    """A 1-of-3 contest and a 2-of-4 contest (placeholders differ), one style."""
    base = build_simple_manifest(["Ann", "Bob", "Cid"], max_choices=1, election_name="Mayor")
    second = ContestDescription(
        object_id="council",
        sequence_order=1,
        electoral_district_id="district-1",
        vote_variation="n_of_m",
        number_elected=2,
        votes_allowed=2,
        name="Council",
        ballot_selections=(
            SelectionDescription("council-0", 0, "Ann"),
            SelectionDescription("council-1", 1, "Bob"),
            SelectionDescription("council-2", 2, "Cid"),
            SelectionDescription("council-9", 9, "Dan"),
        ),
    )
    return replace(
        base,
        candidates=(*base.candidates, Candidate("Dan")),
        contests=(*base.contests, second),
        geopolitical_units=(GeopoliticalUnit("district-1", "District", "unknown"),),
        ballot_styles=(BallotStyle("ballot-style-1", ("district-1",)),),
    )


def make_election(manifest: Manifest | None = None) -> Election:
    manifest = manifest or two_contest_manifest()
    internal = InternalManifest.from_manifest(manifest)
    secret = rand_q()
    ctx = make_context(1, 1, g_pow_p(secret), rand_q(), internal.manifest_hash)
    return Election(secret, manifest, internal, ctx)


def plaintext(
    ballot_id: str, choices: dict[str, list[str]], style: str = "ballot-style-1"
) -> PlaintextBallot:
    """Only the chosen selections (the encryptor fills the rest with zeros, as the reference does)."""
    return PlaintextBallot(
        ballot_id,
        style,
        tuple(
            PlaintextBallotContest(cid, tuple(PlaintextBallotSelection(s, 1) for s in sids))
            for cid, sids in choices.items()
        ),
    )


def submitted_ballots(e: Election, n: int, spoil_every: int = 0) -> list[SubmittedBallot]:
    options = [
        {"contest-1": ["Ann"], "council": ["council-0", "council-9"]},
        {"contest-1": ["Cid"], "council": ["council-1"]},  # undervote
        {"council": ["council-2", "council-1"]},  # contest-1 left out entirely
        {"contest-1": ["Bob"], "council": []},
    ]
    seed = mpz(12345)
    out = []
    for i in range(n):
        c = encrypt_ballot(plaintext(f"ballot-{i}", options[i % len(options)]), e.internal, e.context, seed)
        seed = c.code
        spoiled = spoil_every and (i + 1) % spoil_every == 0
        out.append(make_submitted(c, BallotBoxState.SPOILED if spoiled else BallotBoxState.CAST))
    return out


def clone(
    ballot: SubmittedBallot, new_id: str, contests: tuple[CiphertextBallotContest, ...] | None = None
) -> SubmittedBallot:
    """What anyone can make of a published ballot: its contests (or others given) under a new id, with
    the crypto hash and code recomputed from public data. Every proof still verifies."""
    c = replace(ballot, object_id=new_id, contests=ballot.contests if contests is None else contests)
    h = c.crypto_hash_with(c.manifest_hash)
    return replace(c, crypto_hash=h, code=get_ballot_code(c.code_seed, c.timestamp, h))


def rerandomised(
    ballot: SubmittedBallot, new_id: str, public_key: mpz, *, proofs: bool = True
) -> SubmittedBallot:
    """What a dishonest service could make of a cast ballot to learn its votes from a "spoiled" ballot:
    every selection ciphertext multiplied by a fresh encryption of zero (the same votes, ciphertexts no
    fingerprint matches), every hash, accumulation and the code recomputed from public data, under a new
    id and SPOILED; its proofs copied from the original (none verifies: each challenge covers its
    ciphertext, and a new proof needs the ballot's nonces) or dropped."""
    contests = []
    for c in ballot.contests:
        selections = []
        for s in c.ballot_selections:
            ct = s.ciphertext + encrypt(0, rand_q(), public_key)
            selections.append(
                replace(
                    s,
                    ciphertext=ct,
                    crypto_hash=selection_crypto_hash(s.object_id, s.description_hash, ct),
                    proof=s.proof if proofs else None,
                )
            )
        sels = tuple(selections)
        contests.append(
            replace(
                c,
                ballot_selections=sels,
                ciphertext_accumulation=add(s.ciphertext for s in sels),
                crypto_hash=contest_crypto_hash(c.object_id, sels, c.description_hash),
                proof=c.proof if proofs else None,
            )
        )
    return replace(clone(ballot, new_id, tuple(contests)), state=BallotBoxState.SPOILED)


def decrypt_vote(ct: Ciphertext, secret: mpz, limit: int = 10) -> int:
    """The small plaintext of an exponential ElGamal ciphertext, by search (tests only)."""
    gm = ct.data * gmpy2.invert(gmpy2.powmod(ct.pad, secret, P), P) % P
    for m in range(limit + 1):
        if g_pow_p(m) == gm:
            return m
    raise AssertionError("plaintext out of range")
