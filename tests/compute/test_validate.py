"""Ballot validation: single and batched, every kind of tampering named down to the selection."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gmpy2
import pytest
from ballot_helpers import make_election, submitted_ballots

from compute.ballot import SubmittedBallot, contest_crypto_hash, get_ballot_code, selection_crypto_hash
from compute.constants import G, P, Q
from compute.context import make_context
from compute.elgamal import Ciphertext
from compute.group import g_pow_p, rand_q
from compute.hashing import hash_elems
from compute.validate import BallotInvalid, ballot_code_ok, validate_ballot, validate_ballots


@pytest.fixture(scope="module")
def election():
    return make_election()


@pytest.fixture(scope="module")
def ballots(election):
    return submitted_ballots(election, 10, spoil_every=4)


def _with_selection(b: SubmittedBallot, ci: int, si: int, fix_hashes: bool, **changes) -> SubmittedBallot:
    """Change one selection; with ``fix_hashes`` recompute the hashes above it so only proofs can tell."""
    c = b.contests[ci]
    sels = list(c.ballot_selections)
    s = dataclasses.replace(sels[si], **changes)
    if fix_hashes:
        s = dataclasses.replace(
            s, crypto_hash=selection_crypto_hash(s.object_id, s.description_hash, s.ciphertext)
        )
    sels[si] = s
    c = dataclasses.replace(c, ballot_selections=tuple(sels))
    if fix_hashes:
        acc = Ciphertext(
            gmpy2.mpz(1),
            gmpy2.mpz(1),
        )
        for x in sels:
            acc = acc + x.ciphertext
        c = dataclasses.replace(
            c,
            ciphertext_accumulation=acc,
            crypto_hash=contest_crypto_hash(c.object_id, c.ballot_selections, c.description_hash),
        )
    contests = list(b.contests)
    contests[ci] = c
    b = dataclasses.replace(b, contests=tuple(contests))
    if fix_hashes:
        h = b.crypto_hash_with(b.manifest_hash)
        b = dataclasses.replace(b, crypto_hash=h, code=get_ballot_code(b.code_seed, b.timestamp, h))
    return b


def test_valid_ballots_pass(election, ballots):
    for b in ballots[:3]:
        validate_ballot(b, election.internal, election.context)
    assert validate_ballots(ballots, election.internal, election.context) == []
    assert validate_ballots(ballots, election.internal, election.context, batch_size=3, workers=2) == []
    assert all(ballot_code_ok(b) for b in ballots)


def test_a_code_that_does_not_chain_is_rejected_and_named(election, ballots):
    """Another voter's tracking code on a valid ballot, or a timestamp or seed changed under the code:
    the code no longer chains from (code_seed, timestamp, crypto_hash), as the reference computes it."""
    good = ballots[1]
    forged = [
        dataclasses.replace(good, object_id="stolen-code", code=ballots[0].code),
        dataclasses.replace(good, object_id="moved-timestamp", timestamp=good.timestamp + 1),
        dataclasses.replace(good, object_id="other-seed", code_seed=ballots[0].code_seed + 1),
    ]
    # the ballot hash is recomputed for the new id, so the code is the only thing wrong
    forged = [dataclasses.replace(b, crypto_hash=b.crypto_hash_with(b.manifest_hash)) for b in forged]
    failures = validate_ballots([ballots[0], *forged, ballots[2]], election.internal, election.context)
    assert [(f.ballot_id, f.reason) for f in failures] == [
        (b.object_id, "tracking code does not chain from its code seed, timestamp and crypto hash")
        for b in forged
    ]
    with pytest.raises(BallotInvalid, match="ballot stolen-code: tracking code does not chain"):
        validate_ballot(forged[0], election.internal, election.context)
    assert not ballot_code_ok(forged[0])


def test_proof_usage_other_than_the_references_is_rejected(election, ballots):
    """Usage strings are covered by no hash or proof: a free-text channel unless fixed."""
    b = ballots[0]
    marked = _with_selection(b, 1, 2, False, proof=dataclasses.replace(_sel(b).proof, usage="voter-id:ALICE"))
    with pytest.raises(BallotInvalid, match="contest council, selection council-2: proof usage is not"):
        validate_ballot(marked, election.internal, election.context)
    c = b.contests[0]
    contest = dataclasses.replace(c, proof=dataclasses.replace(c.proof, usage="x"))
    marked = dataclasses.replace(b, contests=(contest, *b.contests[1:]))
    with pytest.raises(BallotInvalid, match="contest contest-1: proof usage is not"):
        validate_ballot(marked, election.internal, election.context)


def _sel(b, ci=1, si=2):
    return b.contests[ci].ballot_selections[si]


def _negated_commitment(s, q_ext):
    p = s.proof
    a0 = P - p.proof_zero_pad
    ct = s.ciphertext
    c = hash_elems(q_ext, ct.pad, ct.data, a0, p.proof_zero_data, p.proof_one_pad, p.proof_one_data)
    return dataclasses.replace(
        p, proof_zero_pad=a0, challenge=c, proof_zero_challenge=(c - p.proof_one_challenge) % Q
    )


TAMPERS: dict[str, tuple[Callable[[SubmittedBallot, Any], SubmittedBallot], str, bool]] = {
    # name: (tamper, expected reason fragment, whether the selection is named)
    "ciphertext data times g (hashes fixed)": (
        lambda b, e: _with_selection(
            b, 1, 2, True, ciphertext=Ciphertext(_sel(b).ciphertext.pad, _sel(b).ciphertext.data * G % P)
        ),
        "hash of the proof",
        True,
    ),
    "ciphertext data times g": (
        lambda b, e: _with_selection(
            b, 1, 2, False, ciphertext=Ciphertext(_sel(b).ciphertext.pad, _sel(b).ciphertext.data * G % P)
        ),
        "selection crypto hash mismatch",
        True,
    ),
    "proof response": (
        lambda b, e: _with_selection(
            b,
            1,
            2,
            False,
            proof=dataclasses.replace(
                _sel(b).proof, proof_one_response=(_sel(b).proof.proof_one_response + 1) % Q
            ),
        ),
        "disjunctive proof",
        True,
    ),
    "proof commitment negated": (
        lambda b, e: _with_selection(
            b,
            1,
            2,
            False,
            proof=dataclasses.replace(_sel(b).proof, proof_zero_pad=P - _sel(b).proof.proof_zero_pad),
        ),
        "hash of the proof",
        True,
    ),
    # the same with the challenge hashed again: only the batch's residue check sees it, and the search
    # for the culprit names the element
    "proof commitment negated, challenge rehashed": (
        lambda b, e: _with_selection(
            b, 1, 2, False, proof=_negated_commitment(_sel(b), e.context.crypto_extended_base_hash)
        ),
        "proof_zero_pad is not in the group",
        True,
    ),
    "ciphertext pad zero": (
        lambda b, e: _with_selection(
            b, 1, 2, True, ciphertext=Ciphertext(gmpy2.mpz(0), _sel(b).ciphertext.data)
        ),
        "not in the group",
        True,
    ),
    "selection description hash": (
        lambda b, e: _with_selection(b, 1, 2, False, description_hash=rand_q()),
        "description hash",
        True,
    ),
}


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampered_selection_is_rejected_and_named(name, election, ballots):
    tamper, reason, names_selection = TAMPERS[name]
    bad = tamper(ballots[1], election)
    with pytest.raises(BallotInvalid) as e:
        validate_ballot(bad, election.internal, election.context)
    err = e.value
    assert err.ballot_id == bad.object_id and bad.object_id in str(err)
    assert err.contest_id == "council"
    if names_selection:
        assert err.selection_id == _sel(bad).object_id and _sel(bad).object_id in str(err)
    assert reason in err.reason


def test_contest_and_ballot_level_tampering(election, ballots):
    e = election
    b = ballots[2]
    c = b.contests[0]

    def contest(**changes) -> SubmittedBallot:
        return dataclasses.replace(b, contests=(dataclasses.replace(c, **changes), *b.contests[1:]))

    cases = [
        (contest(proof=dataclasses.replace(c.proof, response=(c.proof.response + 1) % Q)), "constant proof"),
        (contest(proof=dataclasses.replace(c.proof, constant=2)), "number elected"),
        (contest(ciphertext_accumulation=Ciphertext(c.ciphertext_accumulation.pad, G)), "accumulation"),
        (contest(crypto_hash=rand_q()), "contest crypto hash"),
        (contest(description_hash=rand_q()), "contest description hash"),
        (contest(ballot_selections=c.ballot_selections[:-1]), "selections"),
        (dataclasses.replace(b, crypto_hash=rand_q()), "ballot crypto hash"),
        (dataclasses.replace(b, manifest_hash=rand_q()), "manifest hash"),
        (dataclasses.replace(b, contests=b.contests[1:]), "missing ['contest-1']"),
        (dataclasses.replace(b, style_id="other"), "unknown ballot style"),
    ]
    for bad, reason in cases:
        with pytest.raises(BallotInvalid) as err:
            validate_ballot(bad, e.internal, e.context)
        assert reason in err.value.reason, (reason, err.value)
        assert b.object_id in str(err.value)


@pytest.mark.parametrize("by_buckets", [False, True], ids=["symbol per element", "symbol per bucket"])
def test_batch_names_every_bad_ballot_among_good_ones(election, ballots, by_buckets, monkeypatch):
    # the batch's residue check either way: small batches take one Jacobi symbol per element, large ones
    # one per bucket of the multi-exponentiations (compute.multiexp.multiexp_residues)
    monkeypatch.setattr("compute.multiexp.residues_by_buckets", lambda window, elements, bits: by_buckets)
    e = election
    bad3 = TAMPERS["proof response"][0](ballots[3], e)
    bad7 = TAMPERS["ciphertext data times g (hashes fixed)"][0](ballots[7], e)
    bad8 = TAMPERS["proof commitment negated, challenge rehashed"][0](ballots[8], e)
    c = ballots[5].contests[0]
    bad5 = dataclasses.replace(
        ballots[5],
        contests=(
            dataclasses.replace(c, proof=dataclasses.replace(c.proof, response=(c.proof.response + 1) % Q)),
            ballots[5].contests[1],
        ),
    )
    mixed = [*ballots[:3], bad3, ballots[4], bad5, ballots[6], bad7, bad8, *ballots[9:]]
    failures = validate_ballots(mixed, e.internal, e.context, batch_size=8)
    got = {f.ballot_id: f for f in failures}
    assert set(got) == {bad3.object_id, bad5.object_id, bad7.object_id, bad8.object_id}
    assert "proof_zero_pad is not in the group" in got[bad8.object_id].reason
    assert got[bad3.object_id].selection_id == _sel(bad3).object_id
    assert "disjunctive proof" in got[bad3.object_id].reason
    assert got[bad5.object_id].contest_id == "contest-1" and got[bad5.object_id].selection_id is None
    assert "constant proof" in got[bad5.object_id].reason
    assert got[bad7.object_id].selection_id == _sel(bad7).object_id
    assert bad3.object_id in got[bad3.object_id].message
    # the order follows the input
    assert [f.ballot_id for f in failures] == [bad3.object_id, bad5.object_id, bad7.object_id, bad8.object_id]


def test_context_checks(election, ballots):
    e = election
    other = make_context(1, 1, g_pow_p(rand_q()), rand_q(), rand_q())
    with pytest.raises(ValueError):
        validate_ballot(ballots[0], e.internal, other)
    bad_key = dataclasses.replace(e.context, elgamal_public_key=P - e.context.elgamal_public_key)
    with pytest.raises(ValueError):
        validate_ballots(ballots[:1], e.internal, bad_key)
    # a ballot under another election key fails its proofs
    wrong_key = dataclasses.replace(e.context, elgamal_public_key=g_pow_p(rand_q()))
    assert len(validate_ballots(ballots[:2], e.internal, wrong_key)) == 2
