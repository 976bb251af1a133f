"""Decryption against the reference electionguard 1.4.0 (run under Python 3.10 as an oracle).

(a) On elections made by the reference (5 guardians, quorum 3; with 2 missing and with all present):
    our tally of its submitted ballots equals its encrypted tally; its record (shares, proofs,
    Lagrange reconstruction, spoiled ballots) verifies in ours; our partial and compensated decryption
    from its private guardian records gives its counts; the reference accepts our shares.
(b) An election made by us (our key ceremony, helper ballots encrypted by compute.encrypt): the reference
    accepts our guardian records and backups and decrypts it with its own guardians, and combines our
    shares, getting our counts.
(c) A tampered share is rejected by both, and our error names the guardian.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from compute.ballot import BallotBoxState
from compute.constants import P
from compute.decrypt_with_shares import combine_shares, decrypt_with_guardians
from compute.decryption import (
    compute_compensated_decryption_share,
    compute_decryption_share,
    compute_lagrange_coefficients,
    reconstruct_decryption_share,
)
from compute.decryption_share import DecryptionError, DecryptionShare
from compute.group import g_pow_p
from compute.guardian import GuardianRecord, PrivateGuardianRecord
from compute.manifest import InternalManifest
from compute.record import (
    ElectionRecord,
    read_private_guardians,
    read_record,
    write_private_guardians,
    write_record,
)
from compute.tally import CiphertextTally, accumulate, new_tally
from compute.verify import verify_record
from tests.compute.small_election import SmallElection, make_election
from tests.interop.conftest import ReferenceElection, make_reference_election
from tests.oracle import require_oracle, run_oracle

pytestmark = pytest.mark.interop

ALL_PRESENT_ARGS = ("--guardians", "5", "--quorum", "3", "--missing", "0", "--ballots", "4")


@pytest.fixture(scope="session", params=["two-missing", "all-present"])
def ref(request: pytest.FixtureRequest, reference_election: ReferenceElection) -> ReferenceElection:
    if request.param == "two-missing":
        return reference_election
    require_oracle()
    return make_reference_election(*ALL_PRESENT_ARGS)


def _shares(
    target: Any,
    available: list[PrivateGuardianRecord],
    guardians: list[GuardianRecord],
    context: Any,
) -> dict[str, DecryptionShare]:
    """Our shares: the available guardians' own, and reconstructed ones for the missing guardians."""
    shares = {g.guardian_id: compute_decryption_share(g, target, context) for g in available}
    lagrange = compute_lagrange_coefficients((g.guardian_id, g.sequence_order) for g in available)
    for missing in guardians:
        if missing.guardian_id not in shares:
            comp = {
                g.guardian_id: compute_compensated_decryption_share(g, missing, target, context)
                for g in available
            }
            shares[missing.guardian_id] = reconstruct_decryption_share(missing, target, comp, lagrange)
    return shares


def _shares_json(shares: dict[str, DecryptionShare]) -> dict[str, Any]:
    return {gid: s.to_json() for gid, s in shares.items()}


def _available(ref: ReferenceElection) -> list[PrivateGuardianRecord]:
    ids = set(ref.summary["available_guardian_ids"])
    return [p for p in read_private_guardians(ref.private_dir) if p.guardian_id in ids]


# --- (a) the reference's elections ----------------------------------------------------------------


def test_our_tally_equals_the_references(ref: ReferenceElection) -> None:
    record = read_record(ref.record_dir)
    ours = accumulate(new_tally(InternalManifest.from_manifest(record.manifest)), record.submitted_ballots)
    theirs = json.loads((ref.record_dir / "encrypted_tally.json").read_text())
    assert ours.to_json() == theirs
    assert sorted(ours.cast_ballot_ids) == sorted(ref.summary["cast_ballot_ids"])


def test_reference_record_rewrites_identically(ref: ReferenceElection, tmp_path: Path) -> None:
    out = write_record(read_record(ref.record_dir), tmp_path / "election_record")
    theirs = sorted(p.relative_to(ref.record_dir) for p in ref.record_dir.rglob("*.json"))
    assert theirs == sorted(p.relative_to(out) for p in out.rglob("*.json"))
    for rel in theirs:
        assert json.loads((out / rel).read_text()) == json.loads((ref.record_dir / rel).read_text()), rel
    privates = read_private_guardians(ref.private_dir)
    private_out = write_private_guardians(privates, tmp_path / "election_private_data")
    for p in privates:
        name = f"private_guardian_{p.guardian_id}.json"
        theirs_private = json.loads((ref.private_dir / "private_guardians" / name).read_text())
        assert json.loads((private_out / name).read_text()) == theirs_private


def test_reference_record_verifies_in_ours(ref: ReferenceElection) -> None:
    record = read_record(ref.record_dir)
    assert verify_record(record) == []
    missing = ref.summary["missing_guardian_ids"]
    reconstructed = [
        s
        for c in record.tally.contests.values()
        for sel in c.selections.values()
        for s in sel.shares
        if s.recovered_parts is not None
    ]
    assert {s.guardian_id for s in reconstructed} == set(missing)


def test_we_decrypt_the_references_election(ref: ReferenceElection) -> None:
    record = read_record(ref.record_dir)
    available = _available(ref)
    plain = decrypt_with_guardians(record.encrypted_tally, available, record.guardians, record.context)
    assert plain.counts() == ref.summary["tally"] == record.tally.counts()
    internal = InternalManifest.from_manifest(record.manifest)
    spoiled = [b for b in record.submitted_ballots if b.state == BallotBoxState.SPOILED]
    assert sorted(b.object_id for b in spoiled) == sorted(ref.summary["spoiled_ballot_ids"])
    for ballot in spoiled:
        ours = decrypt_with_guardians(ballot, available, record.guardians, record.context, manifest=internal)
        assert ours.counts() == record.spoiled_ballots[ballot.object_id].counts()


def test_reference_accepts_our_shares_of_its_election(ref: ReferenceElection, tmp_path: Path) -> None:
    record = read_record(ref.record_dir)
    available = _available(ref)
    spoiled = [b for b in record.submitted_ballots if b.state == BallotBoxState.SPOILED]
    data = {
        "tally": _shares_json(_shares(record.encrypted_tally, available, record.guardians, record.context)),
        "ballots": {
            b.object_id: _shares_json(_shares(b, available, record.guardians, record.context))
            for b in spoiled
        },
    }
    (tmp_path / "shares.json").write_text(json.dumps(data))
    out = run_oracle("decrypt_with_our_shares.py", ref.record_dir, tmp_path / "shares.json")
    assert out["tally_invalid"] == []
    assert out["tally"] == ref.summary["tally"]
    for b in spoiled:
        assert out["ballots_invalid"][b.object_id] == []
        assert out["ballots"][b.object_id] == record.spoiled_ballots[b.object_id].counts()


# --- (b) our election -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def our_election(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[SmallElection, CiphertextTally, Path, Path]:
    require_oracle()
    e = make_election(n=5, k=3, n_cast=5, n_spoiled=2, seed=11)
    tally = accumulate(new_tally(e.internal), e.submitted)
    present = e.privates[:3]
    plain = decrypt_with_guardians(tally, present, e.records, e.context)
    spoiled = {
        b.object_id: decrypt_with_guardians(b, present, e.records, e.context, manifest=e.internal)
        for b in e.submitted
        if b.state == BallotBoxState.SPOILED
    }
    root = tmp_path_factory.mktemp("ours")
    record = ElectionRecord(
        manifest=e.manifest,
        context=e.context,
        guardians=e.records,
        lagrange_coefficients=compute_lagrange_coefficients(
            (g.guardian_id, g.sequence_order) for g in present
        ),
        submitted_ballots=e.submitted,
        spoiled_ballots=spoiled,
        encrypted_tally=tally,
        tally=plain,
    )
    record_dir = write_record(record, root / "election_record")
    write_private_guardians(e.privates, root / "election_private_data")
    assert plain.counts() == e.counts
    return e, tally, record_dir, root / "election_private_data"


@pytest.mark.parametrize("n_available", [3, 5])
def test_reference_decrypts_our_election_with_our_guardians(our_election: Any, n_available: int) -> None:
    e, _, record_dir, private_dir = our_election
    out = run_oracle("reference_decrypts_ours.py", record_dir, private_dir, str(n_available))
    assert (
        out["proofs_valid"] and out["joint_key_ok"] and out["commitment_hash_ok"] and out["manifest_hash_ok"]
    )
    assert out["backups_verified"]
    assert out["tally"] == e.counts == out["our_tally_json"]
    assert out["spoiled"] == e.spoiled_votes == out["our_spoiled_json"]


def test_reference_combines_our_shares_of_our_election(our_election: Any, tmp_path: Path) -> None:
    e, tally, record_dir, _ = our_election
    spoiled = [b for b in e.submitted if b.state == BallotBoxState.SPOILED]
    present = [e.privates[1], e.privates[3], e.privates[4]]  # guardians 1 and 3 missing
    data = {
        "tally": _shares_json(_shares(tally, present, e.records, e.context)),
        "ballots": {b.object_id: _shares_json(_shares(b, present, e.records, e.context)) for b in spoiled},
    }
    (tmp_path / "shares.json").write_text(json.dumps(data))
    out = run_oracle("decrypt_with_our_shares.py", record_dir, tmp_path / "shares.json")
    assert out["tally_invalid"] == [] and out["tally"] == e.counts
    assert out["ballots"] == e.spoiled_votes
    assert verify_record(read_record(record_dir)) == []


# --- (c) tampering --------------------------------------------------------------------------------


def test_tampered_share_is_rejected_by_both(our_election: Any, tmp_path: Path) -> None:
    e, tally, record_dir, _ = our_election
    shares = _shares(tally, e.privates[:3], e.records, e.context)
    cid, sel = next(iter(tally.selections()))
    # guardian 2's share of one selection multiplied by g: its proof no longer matches
    bad = DecryptionShare.from_json(shares["2"].to_json())
    s = bad.contests[cid].selections[sel.object_id]
    s.share = s.share * g_pow_p(1) % P
    # guardian 3's compensated part for missing guardian 4, same tampering
    bad4 = DecryptionShare.from_json(shares["4"].to_json())
    part = bad4.contests[cid].selections[sel.object_id].recovered_parts["3"]
    part.share = part.share * g_pow_p(1) % P
    tampered = {**shares, "2": bad, "4": bad4}
    with pytest.raises(DecryptionError) as err:
        combine_shares(tally, tampered, e.records, e.context)
    where = f"{tally.object_id}/{cid}/{sel.object_id}"
    # the altered part also no longer multiplies out to guardian 4's reconstructed share
    assert sorted(err.value.problems) == [
        f"guardian 2: share of {where}",
        f"guardian 3: compensated share for missing guardian 4 of {where}",
        f"missing guardian 4: reconstructed share of {where} is wrong",
    ]
    (tmp_path / "shares.json").write_text(json.dumps({"tally": _shares_json(tampered)}))
    out = run_oracle("decrypt_with_our_shares.py", record_dir, tmp_path / "shares.json")
    assert out["tally"] is None
    assert out["tally_invalid"] == [f"2/{cid}/{sel.object_id}", f"4/{cid}/{sel.object_id}"]
