"""Clones: a ballot's selection ciphertexts under another id pass every proof, and are caught by their
fingerprints (compute.fingerprints) in a list of ballots and in a whole record (compute.verify)."""

from __future__ import annotations

import hashlib

import pytest

from compute.decrypt_with_shares import decrypt_with_guardians
from compute.decryption import compute_lagrange_coefficients
from compute.elgamal import Ciphertext
from compute.fingerprints import ciphertext_fingerprint, find_repeats, selection_fingerprints
from compute.record import ElectionRecord
from compute.tally import accumulate, new_tally
from compute.validate import validate_ballots
from compute.verify import verify_record
from tests.compute import ballot_helpers
from tests.compute.ballot_helpers import clone, submitted_ballots
from tests.compute.small_election import make_election


@pytest.fixture(scope="module")
def two_contests() -> ballot_helpers.Election:
    return ballot_helpers.make_election()


def test_fingerprint_is_sha256_of_fixed_width_pad_and_data() -> None:
    ct = Ciphertext(7, 2**4000 + 3)
    expected = hashlib.sha256((7).to_bytes(512, "big") + (2**4000 + 3).to_bytes(512, "big")).digest()[:16]
    assert ciphertext_fingerprint(ct) == expected
    # Pad and data are not interchangeable, and no leading zero is dropped.
    assert ciphertext_fingerprint(Ciphertext(2**4000 + 3, 7)) != expected
    assert ciphertext_fingerprint(Ciphertext(0x07, 0x0200)) != ciphertext_fingerprint(
        Ciphertext(0x0702, 0x00)
    )


def test_every_selection_is_fingerprinted_placeholders_included(two_contests) -> None:
    (b,) = submitted_ballots(two_contests, 1)
    # contest-1: 3 selections + 1 placeholder; council: 4 selections + 2 placeholders.
    assert [len(c.ballot_selections) for c in b.contests] == [4, 6]
    fps = selection_fingerprints(b)
    assert len(fps) == 10 == len(set(fps))
    placeholder = next(s for c in b.contests for s in c.ballot_selections if s.is_placeholder_selection)
    assert ciphertext_fingerprint(placeholder.ciphertext) in fps


def test_clones_pass_every_proof_and_are_named(two_contests) -> None:
    *honest, fresh = submitted_ballots(two_contests, 5)
    assert find_repeats(honest) == []
    full = clone(honest[0], "copy-of-0")
    # A fresh first contest, the second one copied from ballot-1.
    partial = clone(fresh, "mix", (fresh.contests[0], honest[1].contests[1]))
    ballots = [*honest, full, partial]
    assert validate_ballots(ballots, two_contests.internal, two_contests.context) == []  # the attack
    assert find_repeats(ballots) == [("copy-of-0", "ballot-0"), ("mix", "ballot-1")]
    # Two clones of one ballot each name the first holder, once per pair.
    assert find_repeats([*honest, full, clone(honest[0], "again")]) == [
        ("copy-of-0", "ballot-0"),
        ("again", "ballot-0"),
    ]


def test_a_ballot_repeating_its_own_ciphertext_is_named(two_contests) -> None:
    (b,) = submitted_ballots(two_contests, 1)
    same = (b.contests[0], b.contests[0])
    assert find_repeats([clone(b, "twice", same)]) == [("twice", "twice")]


def test_verify_record_names_a_cloned_pair() -> None:
    """A record whose tally counts a clone is consistent in every other respect: only the clone check
    can tell, and it names both ballots."""
    e = make_election(n=2, k=2, n_cast=3, n_spoiled=0)

    def record_of(ballots: list) -> ElectionRecord:
        tally = accumulate(new_tally(e.internal), ballots)
        return ElectionRecord(
            manifest=e.manifest,
            context=e.context,
            guardians=e.records,
            lagrange_coefficients=compute_lagrange_coefficients(
                (g.guardian_id, g.sequence_order) for g in e.privates
            ),
            submitted_ballots=ballots,
            encrypted_tally=tally,
            tally=decrypt_with_guardians(tally, e.privates, e.records, e.context),
        )

    assert verify_record(record_of(e.submitted)) == []
    cloned = [*e.submitted, clone(e.submitted[1], "ballot-1-again")]
    assert verify_record(record_of(cloned)) == [
        "ballot ballot-1-again repeats a selection ciphertext of ballot ballot-1"
    ]
