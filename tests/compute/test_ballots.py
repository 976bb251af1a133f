"""Ballot encryption, JSON, the binary codec and ballot codes (our own election, no oracle)."""

from __future__ import annotations

import dataclasses
import hmac
import json

import gmpy2
import pytest
from ballot_helpers import decrypt_vote, make_election, plaintext, submitted_ballots
from gmpy2 import mpz

from compute.ballot import (
    BallotBoxState,
    CiphertextBallot,
    PlaintextBallot,
    PlaintextBallotContest,
    PlaintextBallotSelection,
    SubmittedBallot,
    decode_submitted_ballot,
    encode_submitted_ballot,
    get_ballot_code,
    get_hash_for_device,
    make_submitted,
)
from compute.constants import P, Q
from compute.encrypt import EncryptionError, encrypt_ballot
from compute.group import rand_q, to_hex
from compute.hashing import hash_elems
from compute.validate import validate_ballot


@pytest.fixture(scope="module")
def election():
    return make_election()


def _decrypt_contest_data(ext, secret: mpz, seed: mpz) -> dict:
    """Inverse of the reference's hashed ElGamal and byte padding, written from its description."""
    session = bytes.fromhex(to_hex(hash_elems(ext.pad, gmpy2.powmod(ext.pad, secret, P))))
    seed_b = bytes.fromhex(to_hex(seed))
    data = bytes.fromhex(ext.data)
    data = bytes(512 - len(data)) + data
    bits = len(data) * 8

    def mac(key: bytes, msg: bytes, start: int | None) -> bytes:
        if start is not None:
            msg = start.to_bytes(4, "little") + msg + bits.to_bytes(4, "little")
        return hmac.digest(key, msg, "sha256")

    expected_mac = mac(mac(session, seed_b, 0), bytes.fromhex(to_hex(ext.pad)) + data, None)
    assert to_hex(int.from_bytes(expected_mac, "big")) == ext.mac
    plain = b"".join(
        bytes(a ^ b for a, b in zip(data[32 * i : 32 * i + 32], mac(session, seed_b, i + 1), strict=True))
        for i in range(len(data) // 32)
    )
    pad_len = int.from_bytes(plain[:2], "big")
    return json.loads(plain[2 : 512 - pad_len])


def test_votes_placeholders_and_contest_data(election):
    e = election
    # council is 2-of-4: one choice is an undervote, so exactly one placeholder is set
    c = encrypt_ballot(
        plaintext("b1", {"contest-1": ["Bob"], "council": ["council-2"]}), e.internal, e.context, rand_q()
    )
    votes = {
        (ct.object_id, s.object_id): decrypt_vote(s.ciphertext, e.secret)
        for ct in c.contests
        for s in ct.ballot_selections
    }
    assert votes == {
        ("contest-1", "Ann"): 0,
        ("contest-1", "Bob"): 1,
        ("contest-1", "Cid"): 0,
        ("contest-1", "contest-1-3-placeholder"): 0,
        ("council", "council-0"): 0,
        ("council", "council-1"): 0,
        ("council", "council-2"): 1,
        ("council", "council-9"): 0,
        ("council", "council-10-placeholder"): 1,
        ("council", "council-11-placeholder"): 0,
    }
    for ct in c.contests:
        assert (
            decrypt_vote(ct.ciphertext_accumulation, e.secret)
            == e.internal.contest_for(ct.object_id).number_elected
        )
        assert [s.is_placeholder_selection for s in ct.ballot_selections].count(True) == len(
            e.internal.contest_for(ct.object_id).placeholder_selections
        )
    data = {
        ct.object_id: _decrypt_contest_data(ct.extended_data, e.secret, e.context.crypto_extended_base_hash)
        for ct in c.contests
    }
    assert data["contest-1"] == {"error": None, "error_data": None, "write_ins": None}
    assert data["council"]["error"] == "undervote"


def test_overvote_counts_nothing_and_is_recorded(election):
    e = election
    pb = plaintext("b2", {"contest-1": ["Ann", "Bob"], "council": ["council-0", "council-1"]})
    c = encrypt_ballot(pb, e.internal, e.context, rand_q())
    first = c.contests[0]
    assert [decrypt_vote(s.ciphertext, e.secret) for s in first.ballot_selections] == [0, 0, 0, 1]
    data = _decrypt_contest_data(first.extended_data, e.secret, e.context.crypto_extended_base_hash)
    assert data == {"error": "overvote", "error_data": ["Ann", "Bob"], "write_ins": None}
    validate_ballot(make_submitted(c, BallotBoxState.CAST), e.internal, e.context)


def test_missing_contest_is_a_null_vote(election):
    e = election
    c = encrypt_ballot(
        plaintext("b3", {"council": ["council-0", "council-9"]}), e.internal, e.context, rand_q()
    )
    first = c.contests[0]
    assert first.object_id == "contest-1"
    assert [decrypt_vote(s.ciphertext, e.secret) for s in first.ballot_selections] == [0, 0, 0, 1]
    assert (
        _decrypt_contest_data(first.extended_data, e.secret, e.context.crypto_extended_base_hash)["error"]
        == "nullvote"
    )


def test_encryption_is_deterministic_in_the_master_nonce(election):
    e = election
    pb = plaintext("b4", {"contest-1": ["Ann"], "council": ["council-0", "council-1"]})
    seed, nonce = rand_q(), rand_q()
    a = encrypt_ballot(pb, e.internal, e.context, seed, nonce, timestamp=1000)
    b = encrypt_ballot(pb, e.internal, e.context, seed, nonce, timestamp=1000)
    c = encrypt_ballot(pb, e.internal, e.context, seed, rand_q(), timestamp=1000)
    assert a == b
    assert a.contests[0].ballot_selections[0].ciphertext != c.contests[0].ballot_selections[0].ciphertext
    assert a.nonce == nonce
    # nonces and proofs hang together: the selection nonce re-encrypts the same ciphertext
    s = a.contests[0].ballot_selections[0]
    from compute.elgamal import encrypt

    assert encrypt(1, s.nonce, e.context.elgamal_public_key) == s.ciphertext


def test_ballot_codes_chain(election):
    e = election
    device = get_hash_for_device(42, 1, 2, "booth")
    assert device == hash_elems(42, 1, 2, "booth")
    first = encrypt_ballot(
        plaintext("c1", {"contest-1": ["Ann"]}), e.internal, e.context, device, timestamp=7
    )
    second = encrypt_ballot(plaintext("c2", {"contest-1": ["Bob"]}), e.internal, e.context, first.code)
    assert first.code_seed == device
    assert first.code == get_ballot_code(device, 7, first.crypto_hash)
    assert second.code_seed == first.code
    assert second.code == get_ballot_code(first.code, second.timestamp, second.crypto_hash)


def test_encryption_errors(election):
    e = election
    with pytest.raises(EncryptionError):
        encrypt_ballot(plaintext("x", {"contest-1": ["Ann"]}, style="nope"), e.internal, e.context, rand_q())
    with pytest.raises(EncryptionError):
        encrypt_ballot(plaintext("x", {"contest-1": ["Zed"]}), e.internal, e.context, rand_q())
    # a vote of 2 is an overvote (as in the reference): recorded, and nothing counted
    two = PlaintextBallot(
        "x", "ballot-style-1", (PlaintextBallotContest("contest-1", (PlaintextBallotSelection("Ann", 2),)),)
    )
    c = encrypt_ballot(two, e.internal, e.context, rand_q())
    assert [decrypt_vote(s.ciphertext, e.secret) for s in c.contests[0].ballot_selections] == [0, 0, 0, 1]
    data = _decrypt_contest_data(c.contests[0].extended_data, e.secret, e.context.crypto_extended_base_hash)
    assert data["error"] == "overvote"


def test_should_verify_proofs(election):
    e = election
    c = encrypt_ballot(
        plaintext("v", {"contest-1": ["Ann"]}), e.internal, e.context, rand_q(), should_verify_proofs=True
    )
    assert c.contests


def test_submitted_drops_nonces_and_keeps_hashes(election):
    e = election
    c = encrypt_ballot(plaintext("s", {"contest-1": ["Cid"]}), e.internal, e.context, rand_q())
    s = make_submitted(c, BallotBoxState.SPOILED)
    assert s.state == BallotBoxState.SPOILED and s.nonce is None
    assert all(ct.nonce is None and all(x.nonce is None for x in ct.ballot_selections) for ct in s.contests)
    assert all(ct.nonce is not None for ct in c.contests)
    assert s.crypto_hash == c.crypto_hash and s.code == c.code
    assert s.to_json()["state"] == 2
    assert "nonce" in json.dumps(s.to_json()) and s.to_json()["nonce"] is None


def test_json_roundtrip(election):
    e = election
    c = encrypt_ballot(
        plaintext("j", {"contest-1": ["Ann"], "council": ["council-9"]}), e.internal, e.context, rand_q()
    )
    assert CiphertextBallot.from_json(json.loads(json.dumps(c.to_json()))) == c
    s = make_submitted(c, BallotBoxState.CAST)
    d = s.to_json()
    assert SubmittedBallot.from_json(json.loads(json.dumps(d))) == s
    # the reference's layout: upper-case hex, these keys in this order
    assert list(d) == [
        "object_id",
        "style_id",
        "manifest_hash",
        "code_seed",
        "contests",
        "code",
        "timestamp",
        "crypto_hash",
        "nonce",
        "state",
    ]
    sel = d["contests"][0]["ballot_selections"][0]
    assert sel["ciphertext"]["pad"] == sel["ciphertext"]["pad"].upper()
    assert sel["proof"]["usage"] == "Prove selection's value (0 or 1)"
    assert d["contests"][0]["proof"]["usage"] == "Prove value within selection's limit"
    pb = plaintext("p", {"contest-1": ["Ann"]})
    assert PlaintextBallot.from_json(pb.to_json()) == pb


def test_binary_codec(election):
    e = election
    ballots = submitted_ballots(e, 3, spoil_every=2)
    for b in ballots:
        blob = encode_submitted_ballot(b)
        assert decode_submitted_ballot(blob) == b
        n_sel = sum(len(c.ballot_selections) for c in b.contests)
        # each selection: ciphertext + 4 commitments mod p, hash + 2 ids' hashes + 5 proof scalars mod q
        assert len(blob) > n_sel * (6 * 512 + 7 * 32)
        assert len(blob) < len(json.dumps(b.to_json())) * 0.6
        with pytest.raises(ValueError):
            decode_submitted_ballot(blob[:-1])
        with pytest.raises(ValueError):
            decode_submitted_ballot(blob + b"\0")
        with pytest.raises(ValueError):
            decode_submitted_ballot(b"XXXX" + blob[4:])
    # a non-default proof usage string survives too
    b = ballots[0]
    c0 = b.contests[0]
    odd = dataclasses.replace(c0, proof=dataclasses.replace(c0.proof, usage="custom"))
    b2 = dataclasses.replace(b, contests=(odd, *b.contests[1:]))
    assert decode_submitted_ballot(encode_submitted_ballot(b2)) == b2
    assert decode_submitted_ballot(encode_submitted_ballot(b2)).state == b.state
    assert Q < 2**256  # the 32-byte field holds every scalar


def test_binary_codec_refuses_truncation_and_bytes_beyond(election):
    """Cut anywhere (inside an element, a length or a string) is a ValueError naming the truncation, and
    so is a string length reaching past the end: never a ``struct.error`` or an IndexError."""
    blob = encode_submitted_ballot(submitted_ballots(election, 1)[0])
    for k in [*range(0, 200), *range(200, len(blob), 37)]:
        with pytest.raises(ValueError, match="truncated ballot record"):
            decode_submitted_ballot(blob[:k])
    # the ballot id's length says 2^32 - 1 bytes
    with pytest.raises(ValueError, match="truncated ballot record"):
        decode_submitted_ballot(blob[:4] + b"\xff\xff\xff\xff" + blob[8:])
    # a memoryview (a database driver's buffer) decodes as bytes do
    assert decode_submitted_ballot(memoryview(blob)) == decode_submitted_ballot(blob)
