"""Partial, compensated and combined decryption; batch share verification; the record verifier."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from compute.ballot import BallotBoxState
from compute.chaum_pedersen import ChaumPedersenProof, ShareStatement, partial_decrypt, verify_shares
from compute.constants import P, Q
from compute.decrypt_with_shares import combine_shares, decrypt_with_guardians
from compute.decryption import (
    compensated_shares_from_coordinate,
    compute_compensated_decryption_share,
    compute_compensated_decryption_shares,
    compute_decryption_share,
    compute_decryption_shares,
    compute_lagrange_coefficients,
    reconstruct_decryption_share,
)
from compute.decryption_share import CompensatedDecryptionShare, DecryptionError, DecryptionShare
from compute.discrete_log import DiscreteLog
from compute.elgamal import encrypt
from compute.group import g_pow_p, pow_p, rand_q
from compute.hashing import hash_elems
from compute.plaintext_tally import PlaintextTally
from compute.record import ElectionRecord, read_record, write_record
from compute.tally import CiphertextTally, accumulate, new_tally
from compute.verify import verify_record
from tests.compute.small_election import SmallElection, make_election


@pytest.fixture(scope="module")
def election() -> SmallElection:
    return make_election(n=5, k=3, n_cast=4, n_spoiled=1)


@pytest.fixture(scope="module")
def tally(election: SmallElection) -> CiphertextTally:
    return accumulate(new_tally(election.internal), election.submitted)


def _shares_with_missing(
    election: SmallElection, target: object, present: list[int]
) -> dict[str, DecryptionShare]:
    ctx = election.context
    available = [election.privates[i] for i in present]
    shares = {g.guardian_id: compute_decryption_share(g, target, ctx) for g in available}
    lagrange = compute_lagrange_coefficients((g.guardian_id, g.sequence_order) for g in available)
    for missing in election.records:
        if missing.guardian_id not in shares:
            comp = {
                g.guardian_id: compute_compensated_decryption_share(g, missing, target, ctx)
                for g in available
            }
            shares[missing.guardian_id] = reconstruct_decryption_share(missing, target, comp, lagrange)
    return shares


@pytest.mark.parametrize("present", [[0, 1, 2], [1, 3, 4], [0, 1, 2, 3, 4]])
def test_quorum_decrypts_the_tally(
    election: SmallElection, tally: CiphertextTally, present: list[int]
) -> None:
    available = [election.privates[i] for i in present]
    plain = decrypt_with_guardians(tally, available, election.records, election.context)
    assert plain.counts() == election.counts
    for contest in plain.contests.values():
        for sel in contest.selections.values():
            assert g_pow_p(sel.tally) == sel.value
            assert sorted(s.guardian_id for s in sel.shares) == sorted(
                r.guardian_id for r in election.records
            )


def test_spoiled_ballot_decrypts_without_placeholders(election: SmallElection) -> None:
    ballot = next(b for b in election.submitted if b.state == BallotBoxState.SPOILED)
    plain = decrypt_with_guardians(
        ballot, election.privates[2:], election.records, election.context, manifest=election.internal
    )
    assert plain.object_id == ballot.object_id
    assert plain.counts() == election.spoiled_votes[ballot.object_id]


def test_fewer_than_quorum_is_refused(election: SmallElection, tally: CiphertextTally) -> None:
    with pytest.raises(DecryptionError, match="quorum"):
        decrypt_with_guardians(tally, election.privates[:2], election.records, election.context)


def test_tampered_share_is_rejected_naming_the_guardian(
    election: SmallElection, tally: CiphertextTally
) -> None:
    shares = _shares_with_missing(election, tally, [0, 1, 2])
    guardians = election.records
    assert combine_shares(tally, shares, guardians, election.context).counts() == election.counts
    cid, sel = next(iter(tally.selections()))
    # guardian 2 publishes a wrong share (times g) with its old proof
    bad = DecryptionShare.from_json(shares["2"].to_json())
    s = bad.contests[cid].selections[sel.object_id]
    s.share = s.share * g_pow_p(1) % P
    with pytest.raises(DecryptionError) as err:
        combine_shares(tally, {**shares, "2": bad}, guardians, election.context)
    assert err.value.problems == [f"guardian 2: share of {tally.object_id}/{cid}/{sel.object_id}"]
    # guardian 3's compensated part for missing guardian 5 has a bad response
    bad5 = DecryptionShare.from_json(shares["5"].to_json())
    part = bad5.contests[cid].selections[sel.object_id].recovered_parts["3"]
    part.proof.response = (part.proof.response + 1) % Q
    with pytest.raises(DecryptionError) as err:
        combine_shares(tally, {**shares, "5": bad5}, guardians, election.context)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("guardian 3: compensated share for missing guardian 5")


def test_share_json_round_trips(election: SmallElection, tally: CiphertextTally) -> None:
    shares = _shares_with_missing(election, tally, [0, 2, 4])
    for share in shares.values():
        d = json.loads(json.dumps(share.to_json()))
        assert DecryptionShare.from_json(d).to_json() == d
    comp = compute_compensated_decryption_share(
        election.privates[0], election.records[1], tally, election.context
    )
    d = json.loads(json.dumps(comp.to_json()))
    assert CompensatedDecryptionShare.from_json(d).to_json() == d
    plain = decrypt_with_guardians(tally, election.privates[:3], election.records, election.context)
    d = json.loads(json.dumps(plain.to_json()))
    assert PlaintextTally.from_json(d).to_json() == d


def test_batch_verification_names_each_bad_share() -> None:
    q_hash = rand_q()
    statements = []
    for g in range(3):
        s = rand_q()
        for i in range(12):
            ct = encrypt(i % 3, rand_q(), g_pow_p(rand_q()))
            m, proof = partial_decrypt(ct, s, q_hash)
            statements.append(ShareStatement(f"g{g}/{i}", ct, g_pow_p(s), m, proof))
    assert verify_shares(statements, q_hash) == []
    # a wrong response passes the hash check, so only the equations (batched, then one by one) catch it
    statements[5].proof.response = (statements[5].proof.response + 1) % Q
    # a share outside the order-q subgroup: M' = -A^s with a proof made for M' and an even challenge, so
    # both equations hold (A^v = b M'^c) and only the subgroup check can catch it
    t = statements[20]
    secret = rand_q()
    key = g_pow_p(secret)
    while True:
        u = rand_q()
        a, b = g_pow_p(u), pow_p(t.message.pad, u)
        m_neg = P - pow_p(t.message.pad, secret)
        c = hash_elems(q_hash, t.message.pad, t.message.data, a, b, m_neg)
        if c % 2 == 0:
            break
    forged = ChaumPedersenProof(a, b, c, (u + c * secret) % Q)
    statements[20] = ShareStatement(t.label, t.message, key, m_neg, forged)
    assert verify_shares(statements, q_hash) == ["g0/5", "g1/8"]


def test_discrete_log_table_and_giant_steps() -> None:
    dlog = DiscreteLog(table_size=256, max_exponent=10_000)
    for t in (0, 1, 17, 255, 256, 257, 5_000, 9_999):
        assert dlog(g_pow_p(t)) == t
    with pytest.raises(DecryptionError):
        dlog(g_pow_p(123_456))


def test_verify_record_accepts_ours_and_names_tampering(
    election: SmallElection, tally: CiphertextTally, tmp_path: Path
) -> None:
    present = election.privates[:3]
    plain = decrypt_with_guardians(tally, present, election.records, election.context)
    spoiled = {
        b.object_id: decrypt_with_guardians(
            b, present, election.records, election.context, manifest=election.internal
        )
        for b in election.submitted
        if b.state == BallotBoxState.SPOILED
    }
    record = ElectionRecord(
        manifest=election.manifest,
        context=election.context,
        guardians=election.records,
        lagrange_coefficients=compute_lagrange_coefficients(
            (g.guardian_id, g.sequence_order) for g in present
        ),
        submitted_ballots=election.submitted,
        spoiled_ballots=spoiled,
        encrypted_tally=tally,
        tally=plain,
    )
    write_record(record, tmp_path / "election_record")
    again = read_record(tmp_path / "election_record")
    assert verify_record(again) == []
    # a guardian's share of one tally selection altered in tally.json
    cid, contest = next(iter(again.tally.contests.items()))
    sid, sel = next(iter(contest.selections.items()))
    share = next(s for s in sel.shares if s.guardian_id == "2")
    share.share = share.share * g_pow_p(1) % P
    problems = verify_record(again)
    assert any(
        p.startswith(f"guardian 2: share of tally {again.tally.object_id}/{cid}/{sid}") for p in problems
    )
    share.share = share.share * pow(int(g_pow_p(1)), -1, int(P)) % P  # undo
    assert verify_record(again) == []
    # a count changed, with and without its value g^t
    sel.tally += 1
    assert any(p.endswith(f"{cid}/{sid}: value is not g^{sel.tally}") for p in verify_record(again))
    sel.value = g_pow_p(sel.tally)
    assert any("is not the ciphertext's data" in p for p in verify_record(again))
    # a cast ballot dropped: the encrypted tally no longer matches
    fewer = dataclasses.replace(record, submitted_ballots=record.submitted_ballots[1:])
    assert any("not the product" in p for p in verify_record(fewer))
    # the tally's data twisted to p - B (its order-2 image), in encrypted_tally.json and tally.json's
    # message alike, the shares left honest: the share proofs take their targets as checked
    # (targets_checked), and the verdict still names it, twice over
    twisted = read_record(tmp_path / "election_record")
    enc = next(s for c, s in twisted.encrypted_tally.selections() if (c, s.object_id) == (cid, sid))
    enc.ciphertext = dataclasses.replace(enc.ciphertext, data=P - enc.ciphertext.data)
    message = twisted.tally.contests[cid].selections[sid]
    message.message = enc.ciphertext
    problems = verify_record(twisted)
    assert any(
        p.endswith(f"{cid}/{sid}: g^tally times the shares is not the ciphertext's data") for p in problems
    )
    assert any("not the product" in p for p in problems), problems


def test_many_spoiled_ballots_in_one_call() -> None:
    e = make_election(n=3, k=2, n_cast=1, n_spoiled=3, seed=3)
    spoiled = [b for b in e.submitted if b.state == BallotBoxState.SPOILED]
    present, missing = e.privates[1:], e.records[0]
    own = {g.guardian_id: compute_decryption_shares(g, spoiled, e.context) for g in present}
    comp = {
        g.guardian_id: compute_compensated_decryption_shares(g, missing, spoiled, e.context) for g in present
    }
    lagrange = compute_lagrange_coefficients((g.guardian_id, g.sequence_order) for g in present)
    for i, ballot in enumerate(spoiled):
        shares = {gid: s[i] for gid, s in own.items()}
        assert all(s.object_id == ballot.object_id for s in shares.values())
        shares[missing.guardian_id] = reconstruct_decryption_share(
            missing, ballot, {gid: c[i] for gid, c in comp.items()}, lagrange
        )
        plain = combine_shares(ballot, shares, e.records, e.context, manifest=e.internal)
        assert plain.counts() == e.spoiled_votes[ballot.object_id]


def test_forged_recovery_key_is_caught(election: SmallElection, tally: CiphertextTally) -> None:
    """A compensated part with a made-up recovery key g^x, share A^x and a valid proof for x: the proof
    checks out, so only the recovery key recomputed from the missing guardian's commitments catches it."""
    shares = _shares_with_missing(election, tally, [0, 1, 2])
    cid, sel = next(iter(tally.selections()))
    forged = DecryptionShare.from_json(shares["4"].to_json())
    selection = forged.contests[cid].selections[sel.object_id]
    x = rand_q()
    m, proof = partial_decrypt(sel.ciphertext, x, election.context.crypto_extended_base_hash)
    part = selection.recovered_parts["1"]
    part.recovery_key, part.share, part.proof = g_pow_p(x), m, proof
    with pytest.raises(DecryptionError) as err:
        combine_shares(tally, {**shares, "4": forged}, election.records, election.context)
    where = f"{tally.object_id}/{cid}/{sel.object_id}"
    assert f"guardian 1: wrong recovery key for missing guardian 4 in {where}" in err.value.problems
    assert f"missing guardian 4: reconstructed share of {where} is wrong" in err.value.problems


def test_shares_from_key_pair_and_coordinate_alone(election: SmallElection, tally: CiphertextTally) -> None:
    """The service may keep only a guardian's key pair, or only its decrypted backup coordinate."""
    present = election.privates[:3]
    shares = {
        g.guardian_id: compute_decryption_share(g.election_keys, tally, election.context) for g in present
    }
    lagrange = compute_lagrange_coefficients((g.guardian_id, g.sequence_order) for g in present)
    for missing in election.records[3:]:
        comp = {}
        for g in present:
            keys = g.election_keys
            (comp[g.guardian_id],) = compensated_shares_from_coordinate(
                g.guardian_id,
                g.sequence_order,
                keys.key_pair.public_key,
                g.coordinate_from(missing.guardian_id),
                missing,
                [tally],
                election.context,
            )
        shares[missing.guardian_id] = reconstruct_decryption_share(missing, tally, comp, lagrange)
    assert combine_shares(tally, shares, election.records, election.context).counts() == election.counts
    g = present[0]
    with pytest.raises(DecryptionError, match="guardian 1: backup from 4 does not match"):
        compensated_shares_from_coordinate(
            "1",
            1,
            g.election_keys.key_pair.public_key,
            rand_q(),
            election.records[3],
            [tally],
            election.context,
        )
