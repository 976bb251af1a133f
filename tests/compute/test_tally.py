"""The encrypted tally: accumulation of cast ballots, chunk sums, JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest

from compute.ballot import BallotBoxState
from compute.constants import P
from compute.elgamal import Ciphertext
from compute.group import g_pow_p, pow_p
from compute.tally import (
    CiphertextTally,
    TallyError,
    accumulate,
    add_tallies,
    new_tally,
    sum_tallies,
)
from tests.compute.small_election import SmallElection, make_election


@pytest.fixture(scope="module")
def election() -> SmallElection:
    return make_election(n=3, k=2, n_cast=5, n_spoiled=2)


def _decrypt_with_joint_secret(election: SmallElection, tally: CiphertextTally) -> dict[str, dict[str, int]]:
    """Decrypt with the sum of the guardians' secrets: independent of compute.decryption."""
    s = sum(p.election_keys.key_pair.secret_key for p in election.privates)
    out: dict[str, dict[str, int]] = {}
    for cid, sel in tally.selections():
        value = sel.ciphertext.data * pow(int(pow_p(sel.ciphertext.pad, s)), -1, int(P)) % P
        out.setdefault(cid, {})[sel.object_id] = next(t for t in range(100) if g_pow_p(t) == value)
    return out


def test_tally_counts_cast_ballots_only(election: SmallElection) -> None:
    tally = accumulate(new_tally(election.internal), election.submitted)
    assert tally.cast() == 5 and tally.spoiled() == 2
    assert _decrypt_with_joint_secret(election, tally) == election.counts
    # the tally has the manifest's selections only (placeholders excluded) with their description hashes
    for contest in election.internal.contests:
        tc = tally.contests[contest.object_id]
        assert tc.description_hash == contest.crypto_hash()
        assert list(tc.selections) == [s.object_id for s in contest.ballot_selections]
        for s in contest.ballot_selections:
            assert tc.selections[s.object_id].description_hash == s.crypto_hash()


def test_a_ballot_is_counted_once(election: SmallElection) -> None:
    tally = accumulate(new_tally(election.internal), election.submitted)
    before = tally.to_json()
    accumulate(tally, election.submitted[:2])
    assert tally.to_json() == before


def test_chunk_tallies_add_up_to_the_whole(election: SmallElection) -> None:
    whole = accumulate(new_tally(election.internal), election.submitted)
    chunks = [accumulate(new_tally(election.internal), election.submitted[i : i + 2]) for i in range(0, 7, 2)]
    total = sum_tallies(chunks)
    assert total.to_json() == whole.to_json()
    assert total.cast_ballot_ids == whole.cast_ballot_ids
    with pytest.raises(TallyError):
        add_tallies(chunks[0], chunks[0])  # the same ballots twice


def test_mismatched_ballot_is_refused(election: SmallElection) -> None:
    ballot = next(b for b in election.submitted if b.state == BallotBoxState.CAST)
    contest = ballot.contests[0]
    shorter = dataclasses.replace(contest, ballot_selections=contest.ballot_selections[1:])
    bad = dataclasses.replace(ballot, object_id="bad", contests=(shorter,))
    with pytest.raises(TallyError, match="bad"):
        accumulate(new_tally(election.internal), [bad])


def test_published_json_round_trip(election: SmallElection) -> None:
    tally = accumulate(new_tally(election.internal), election.submitted)
    d = json.loads(json.dumps(tally.to_json()))
    assert set(d) == {"object_id", "contests"}
    again = CiphertextTally.from_json(d)
    assert again.to_json() == d
    sel = next(iter(again.selections()))[1]
    assert isinstance(sel.ciphertext, Ciphertext)
