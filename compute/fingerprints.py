"""Fingerprints of a ballot's selection ciphertexts, to refuse clones: one ballot counted under many ids.

A ballot's proofs bind its ciphertexts but not its ``object_id``, and its ``crypto_hash`` and ``code`` are
computed from public data, so anyone can resubmit a cast ballot's selections under a new id and every
check passes: cast, it counts twice; spoiled, it decrypts someone's cast vote. Honest encryption never
repeats a ciphertext (each nonce is fresh, derived from the ballot's id and a random master nonce), so a
selection ciphertext seen twice in one election marks a clone.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from array import array
from collections.abc import Iterable

from compute.ballot import CiphertextBallot, SubmittedBallot
from compute.elgamal import Ciphertext
from compute.group import to_bytes_p

FINGERPRINT_BYTES = 16  # 128 bits: an accidental collision among 2^40 ciphertexts has odds below 2^-48
PREFIX_BYTES = 8  # of each selection fingerprint kept for a clone check over many ballots: 8 bytes each


def ciphertext_fingerprint(ct: Ciphertext) -> bytes:
    """SHA-256 of the fixed-width big-endian pad || data, truncated."""
    return hashlib.sha256(to_bytes_p(ct.pad) + to_bytes_p(ct.data)).digest()[:FINGERPRINT_BYTES]


def selection_fingerprints(ballot: SubmittedBallot | CiphertextBallot) -> list[bytes]:
    """One per selection of every contest, placeholders included (a placeholder is a vote too)."""
    return [ciphertext_fingerprint(s.ciphertext) for c in ballot.contests for s in c.ballot_selections]


def repeat_message(ballot_id: str, original_id: str) -> str:
    if ballot_id == original_id:
        return f"ballot {ballot_id} repeats one of its own selection ciphertexts"
    return f"ballot {ballot_id} repeats a selection ciphertext of ballot {original_id}"


def find_repeats(ballots: Iterable[SubmittedBallot | CiphertextBallot]) -> list[tuple[str, str]]:
    """(ballot id, id of the earlier ballot it repeats) for every ballot that repeats a selection
    ciphertext of an earlier one, or of itself; each pair once, in the order met."""
    return repeats_among((b.object_id, selection_fingerprints(b)) for b in ballots)


def repeats_among(fingerprinted: Iterable[tuple[str, Iterable[bytes]]]) -> list[tuple[str, str]]:
    """``find_repeats`` over (ballot id, its fingerprints) already computed."""
    first: dict[bytes, str] = {}
    pairs: dict[tuple[str, str], None] = {}
    for ballot_id, fingerprints in fingerprinted:
        for fp in fingerprints:
            if fp in first:
                pairs.setdefault((ballot_id, first[fp]))
            else:
                first[fp] = ballot_id
    return list(pairs)


def packed_fingerprint(packed: bytes) -> bytes:
    """``ciphertext_fingerprint`` of a ciphertext already packed as 512-byte big-endian pad || data (the
    API's ``cast-ciphertexts`` form)."""
    return hashlib.sha256(packed).digest()[:FINGERPRINT_BYTES]


class PrefixSet:
    """8-byte fingerprint prefixes in 256 buckets by first byte (so finding a repeat sorts one bucket at a
    time, not every prefix at once): a clone check over many ballots in 8 bytes a ciphertext, the
    suspects then checked exactly."""

    def __init__(self) -> None:
        self.buckets = [array("Q") for _ in range(256)]

    def add(self, raw: bytes) -> None:
        """``raw``: prefixes of ``PREFIX_BYTES`` each, concatenated."""
        prefixes = array("Q")
        prefixes.frombytes(raw)
        for x in prefixes:
            self.buckets[x & 0xFF].append(x)

    def repeated(self) -> set[bytes]:
        found: set[bytes] = set()
        for bucket in self.buckets:
            ordered = sorted(bucket)
            found.update(
                a.to_bytes(PREFIX_BYTES, sys.byteorder) for a, b in itertools.pairwise(ordered) if a == b
            )
        return found
