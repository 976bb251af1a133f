"""compute/decryption_checks.py: what a guardian checks before decrypting, on ballots of a real (small)
election served as the API serves them (``cast-ciphertexts`` pages, units' targets)."""

from __future__ import annotations

import base64

import pytest

from compute.ballot import BallotBoxState, SubmittedBallot
from compute.decryption_checks import PublishedCheck
from compute.decryption_target import Target, target_of
from compute.elgamal import Ciphertext, encrypt
from compute.group import rand_q
from compute.tally import CiphertextTally, accumulate, new_tally, slice_tally, slices
from tests.compute import ballot_helpers
from tests.compute.ballot_helpers import clone, rerandomised, submitted_ballots


@pytest.fixture(scope="module")
def election() -> ballot_helpers.Election:
    return ballot_helpers.make_election()


def _packed(ct: Ciphertext) -> str:
    return base64.b64encode(int(ct.pad).to_bytes(512, "big") + int(ct.data).to_bytes(512, "big")).decode()


def _page(ballots: list[SubmittedBallot], first_seq: int = 1) -> list[dict[str, object]]:
    return [
        {
            "seq": first_seq + i,
            "object_id": b.object_id,
            "selections": [
                [c.object_id, s.object_id, _packed(s.ciphertext), s.is_placeholder_selection]
                for c in b.contests
                for s in c.ballot_selections
            ],
        }
        for i, b in enumerate(ballots)
    ]


def _check(
    election: ballot_helpers.Election,
    cast: list[SubmittedBallot],
    spoiled: list[SubmittedBallot],
    *,
    aggregate: CiphertextTally | None = None,
    presented: list[Target] | None = None,
) -> list[str]:
    agg = aggregate or accumulate(new_tally(election.internal), cast)
    check = PublishedCheck(agg)
    check.add_spoiled_ids(b.object_id for b in spoiled)
    for i, keys in enumerate(slices(agg, 3)):
        check.add_unit(f"slice {i + 1}", "slice", [target_of(slice_tally(agg, keys))])
    check.add_unit(
        "spoiled 1", "spoiled", presented if presented is not None else [target_of(b) for b in spoiled]
    )
    # Each ballot presented for decryption as the election published it (GET .../ballots/{id}), a page
    # (here: one ballot) at a time.
    published = {b.object_id: b for b in [*cast, *spoiled]}
    for bid in check.spoiled_to_check():
        if bid in published:
            check.add_spoiled_ballots([published[bid]], election.internal, election.context)
    check.add_cast_page(_page(cast[:2]))
    check.add_cast_page(_page(cast[2:], 3))
    if check.suspects():
        check.add_suspect_page(_page(cast[:2]))
        check.add_suspect_page(_page(cast[2:], 3))
    return check.problems()


def _split(ballots: list[SubmittedBallot]) -> tuple[list[SubmittedBallot], list[SubmittedBallot]]:
    return (
        [b for b in ballots if b.state == BallotBoxState.CAST],
        [b for b in ballots if b.state == BallotBoxState.SPOILED],
    )


def test_what_was_published_passes(election: ballot_helpers.Election) -> None:
    cast, spoiled = _split(submitted_ballots(election, 6, spoil_every=3))
    assert len(spoiled) == 2
    assert _check(election, cast, spoiled) == []


def test_an_aggregate_not_the_product_of_the_cast_ballots_is_refused(
    election: ballot_helpers.Election,
) -> None:
    cast, spoiled = _split(submitted_ballots(election, 6, spoil_every=3))
    # The aggregate (and its slices) made of the first cast ballot alone: a slice would decrypt its vote.
    one = accumulate(new_tally(election.internal), cast[:1])
    problems = _check(election, cast, spoiled, aggregate=one)
    assert problems and all("is not the product of the 4 cast ballots" in p for p in problems), problems


def test_a_cast_ballot_presented_as_spoiled_is_refused(election: ballot_helpers.Election) -> None:
    cast, spoiled = _split(submitted_ballots(election, 6, spoil_every=3))
    under_spoiled_id = target_of(cast[1])
    under_spoiled_id.object_id = spoiled[0].object_id
    problems = _check(election, cast, spoiled, presented=[under_spoiled_id, target_of(spoiled[1])])
    assert problems == [
        f"spoiled 1: ballot {spoiled[0].object_id} is presented with ciphertexts that are not the ones the"
        " election published for it",
        f"spoiled ballot {spoiled[0].object_id} (presented for decryption) repeats a selection ciphertext"
        f" of cast ballot {cast[1].object_id}",
    ]
    problems = _check(election, cast, spoiled, presented=[target_of(cast[1])])
    assert (
        f"spoiled 1: ballot {cast[1].object_id} is presented for decryption but not published as spoiled"
        in problems
    )
    assert (
        f"spoiled ballot {cast[1].object_id} (presented for decryption) is published as cast, not spoiled"
        in problems
    )


@pytest.mark.parametrize("proofs", [True, False], ids=["proofs-copied", "no-proofs"])
def test_a_re_randomised_cast_ballot_presented_as_spoiled_is_refused(
    election: ballot_helpers.Election, proofs: bool
) -> None:
    # A cast ballot's ciphertexts each times an encryption of zero: the same votes, no fingerprint in
    # common with any cast ballot, every hash and the code recomputed, published as a spoiled ballot
    # under a new id. Only its proofs betray it.
    cast, spoiled = _split(submitted_ballots(election, 6, spoil_every=3))
    fake = rerandomised(cast[1], "fake-spoiled", election.context.elgamal_public_key, proofs=proofs)
    with_fake = [*spoiled, fake]
    problems = _check(election, cast, with_fake)
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "spoiled ballot fake-spoiled (presented for decryption) is not a valid ballot of this election:"
        " ballot fake-spoiled, contest contest-1, selection "
    ), problems
    assert ("proof" in problems[0]) and (proofs or "has no proof" in problems[0]), problems
    # Honest spoiled ballots beside it pass (only the fake is named), and without the fake all pass.
    assert _check(election, cast, spoiled) == []


def test_a_spoiled_ballot_presented_with_other_ciphertexts_than_its_own_is_refused(
    election: ballot_helpers.Election,
) -> None:
    cast, spoiled = _split(submitted_ballots(election, 6, spoil_every=3))
    k = election.context.elgamal_public_key
    # One selection's ciphertext swapped for a fresh one (no ballot holds it: no repeat to find).
    other = target_of(spoiled[0])
    sid, _ = other.contests[1].selections[2]
    other.contests[1].selections[2] = (sid, encrypt(1, rand_q(), k))
    # A contest left out; the published ballot's contest ids under another description hash.
    fewer = target_of(spoiled[1])
    fewer.contests.pop()
    problems = _check(election, cast, spoiled, presented=[other, fewer])
    assert problems == [
        f"spoiled 1: ballot {b.object_id} is presented with ciphertexts that are not the ones the election"
        " published for it"
        for b in spoiled
    ]
    renamed = target_of(spoiled[0])
    renamed.contests[0].description_hash = renamed.contests[1].description_hash
    problems = _check(election, cast, spoiled, presented=[renamed, target_of(spoiled[1])])
    assert problems == [
        f"spoiled 1: ballot {spoiled[0].object_id} is presented with ciphertexts that are not the ones the"
        " election published for it"
    ]


def test_a_presented_spoiled_ballot_left_unchecked_is_refused(election: ballot_helpers.Election) -> None:
    # Fail closed: a caller that never hands over the published ballots gets no verdict to decrypt.
    cast, spoiled = _split(submitted_ballots(election, 6, spoil_every=3))
    agg = accumulate(new_tally(election.internal), cast)
    check = PublishedCheck(agg)
    check.add_spoiled_ids(b.object_id for b in spoiled)
    for i, keys in enumerate(slices(agg, 3)):
        check.add_unit(f"slice {i + 1}", "slice", [target_of(slice_tally(agg, keys))])
    check.add_unit("spoiled 1", "spoiled", [target_of(b) for b in spoiled])
    check.add_cast_page(_page(cast))
    check.add_spoiled_ballots(spoiled[1:], election.internal, election.context)
    assert check.problems() == [
        f"spoiled ballot {spoiled[0].object_id} (presented for decryption) was not checked against the"
        " ballot the election published"
    ]


def test_two_cast_ballots_sharing_a_ciphertext_are_refused(election: ballot_helpers.Election) -> None:
    cast, spoiled = _split(submitted_ballots(election, 6, spoil_every=3))
    copy = clone(cast[0], "copy-of-0")
    with_copy = [*cast, copy]
    problems = _check(election, with_copy, spoiled)  # the aggregate counts the copy too
    assert problems == [
        f"cast ballot copy-of-0 repeats a selection ciphertext of cast ballot {cast[0].object_id}"
    ]


def test_a_slice_off_the_aggregate_is_refused(election: ballot_helpers.Election) -> None:
    cast, spoiled = _split(submitted_ballots(election, 6, spoil_every=3))
    agg = accumulate(new_tally(election.internal), cast)
    check = PublishedCheck(agg)
    check.add_spoiled_ids(b.object_id for b in spoiled)
    keys = slices(agg, 3)
    check.add_unit("slice 1", "slice", [target_of(slice_tally(agg, keys[0]))])  # the others left out
    check.add_unit("slice 2", "slice", [target_of(slice_tally(agg, keys[0]))])  # ... and one twice
    check.add_unit("spoiled 1", "spoiled", [target_of(b) for b in spoiled])
    check.add_cast_page(_page(cast))
    problems = check.problems()
    assert any("is presented twice" in p for p in problems)
    assert any("the slices leave" in p for p in problems), problems
