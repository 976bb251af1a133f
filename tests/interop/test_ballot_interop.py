"""Ballots and manifests against the reference electionguard 1.4.0 (run under Python 3.10)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from gmpy2 import mpz

from compute.ballot import BallotBoxState, CiphertextBallot, PlaintextBallot, SubmittedBallot, make_submitted
from compute.constants import Q
from compute.context import ElectionContext
from compute.encrypt import encrypt_ballot
from compute.group import to_hex
from compute.manifest import InternalManifest, Manifest
from compute.validate import BallotInvalid, validate_ballot, validate_ballots
from tests.oracle import require_oracle, run_oracle

pytestmark = pytest.mark.interop

REFERENCE_DATA = Path(__file__).resolve().parents[1] / "data" / "reference-data"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def election(reference_election):
    rec = reference_election.record_dir
    manifest = Manifest.from_json(_load(rec / "manifest.json"))
    internal = InternalManifest.from_manifest(manifest)
    context = ElectionContext.from_json(_load(rec / "context.json"))
    ballots = [
        SubmittedBallot.from_json(_load(p)) for p in sorted((rec / "submitted_ballots").glob("*.json"))
    ]
    return manifest, internal, context, ballots


def _replace_selection(ballot: SubmittedBallot, ci: int, si: int, **changes) -> SubmittedBallot:
    c = ballot.contests[ci]
    sels = list(c.ballot_selections)
    sels[si] = dataclasses.replace(sels[si], **changes)
    contests = list(ballot.contests)
    contests[ci] = dataclasses.replace(c, ballot_selections=tuple(sels))
    return dataclasses.replace(ballot, contests=tuple(contests))


def _reference_validates(tmp_path: Path, record: Path, ballots: list[SubmittedBallot]) -> dict:
    paths = []
    for i, b in enumerate(ballots):
        p = tmp_path / f"ballot_{i}.json"
        p.write_text(json.dumps(b.to_json()))
        paths.append(p)
    return run_oracle("validate_ballots.py", record / "manifest.json", record / "context.json", *paths)


def test_reference_record_parses_and_reserialises_identically(reference_election, election):
    manifest, internal, context, ballots = election
    rec = reference_election.record_dir
    assert manifest.to_json() == _load(rec / "manifest.json")
    assert context.to_json() == _load(rec / "context.json")
    assert to_hex(internal.manifest_hash) == reference_election.summary["manifest_hash"]
    for b in ballots:
        assert b.to_json() == _load(rec / "submitted_ballots" / f"submitted_ballot_{b.object_id}.json")
    assert {b.object_id for b in ballots if b.state == BallotBoxState.SPOILED} == set(
        reference_election.summary["spoiled_ballot_ids"]
    )


def test_every_reference_ballot_validates_in_ours(election):
    _, internal, context, ballots = election
    assert len(ballots) >= 4
    for b in ballots:
        validate_ballot(b, internal, context)
    assert validate_ballots(ballots, internal, context) == []


def _tampered(ballots: list[SubmittedBallot]) -> tuple[SubmittedBallot, SubmittedBallot]:
    """(one ciphertext changed, one proof response changed), on two different ballots."""
    a, b = ballots[0], ballots[1]
    sa = a.contests[1].ballot_selections[1]
    # multiplying by g keeps the ciphertext in the group; the selection hash is recomputed so that
    # only the proofs can catch it
    from compute.ballot import selection_crypto_hash
    from compute.constants import G, P
    from compute.elgamal import Ciphertext

    ct = Ciphertext(sa.ciphertext.pad, sa.ciphertext.data * G % P)
    bad_ct = _replace_selection(
        a, 1, 1, ciphertext=ct, crypto_hash=selection_crypto_hash(sa.object_id, sa.description_hash, ct)
    )
    sb = b.contests[1].ballot_selections[1]
    proof = dataclasses.replace(sb.proof, proof_zero_response=(sb.proof.proof_zero_response + 1) % Q)
    bad_proof = _replace_selection(b, 1, 1, proof=proof)
    return bad_ct, bad_proof


def test_tampering_rejected_by_ours_with_the_object_named(election):
    _, internal, context, ballots = election
    bad_ct, bad_proof = _tampered(ballots)
    for bad in (bad_ct, bad_proof):
        with pytest.raises(BallotInvalid) as e:
            validate_ballot(bad, internal, context)
        msg = str(e.value)
        assert bad.object_id in msg
        assert bad.contests[1].object_id in msg
    # the proof tamper is found by the proof search, which names the selection
    with pytest.raises(BallotInvalid) as e:
        validate_ballot(bad_proof, internal, context)
    assert bad_proof.contests[1].ballot_selections[1].object_id in str(e.value)
    failures = validate_ballots([*ballots[2:], bad_proof, bad_ct], internal, context)
    assert sorted(f.ballot_id for f in failures) == sorted([bad_ct.object_id, bad_proof.object_id])
    named = {f.ballot_id: f for f in failures}
    assert named[bad_proof.object_id].selection_id == bad_proof.contests[1].ballot_selections[1].object_id
    assert named[bad_ct.object_id].contest_id == bad_ct.contests[1].object_id


def test_tampering_rejected_by_the_reference(tmp_path, reference_election, election):
    _, _, _, ballots = election
    bad_ct, bad_proof = _tampered(ballots)
    out = _reference_validates(tmp_path, reference_election.record_dir, [ballots[2], bad_ct, bad_proof])
    assert out[ballots[2].object_id]["valid"] is True
    assert out[bad_ct.object_id]["valid"] is False
    assert out[bad_proof.object_id]["valid"] is False


def test_our_encryption_equals_the_reference_given_its_nonces(reference_election, election):
    _, internal, context, _ = election
    priv = reference_election.private_dir
    for path in sorted((priv / "ciphertext_ballots").glob("*.json")):
        ref = _load(path)
        ref_ballot = CiphertextBallot.from_json(ref)
        plain = PlaintextBallot.from_json(
            _load(priv / "plaintext_ballots" / path.name.replace("ciphertext_ballot_", "plaintext_ballot_"))
        )
        ours = encrypt_ballot(
            plain, internal, context, ref_ballot.code_seed, ref_ballot.nonce, timestamp=ref_ballot.timestamp
        )
        assert ours.to_json() == ref


def test_our_ballots_validate_in_the_reference(tmp_path, reference_election, election):
    _, internal, context, _ = election
    priv = reference_election.private_dir
    plains = [
        PlaintextBallot.from_json(_load(p)) for p in sorted((priv / "plaintext_ballots").glob("*.json"))
    ]
    seed = mpz(reference_election.summary["encryption_device_hash"], 16)
    ours: list[SubmittedBallot] = []
    for i, p in enumerate(plains[:3]):
        p = dataclasses.replace(p, object_id=f"ours-{i}")
        c = encrypt_ballot(p, internal, context, seed)
        seed = c.code
        ours.append(make_submitted(c, BallotBoxState.CAST if i % 2 == 0 else BallotBoxState.SPOILED))
    assert validate_ballots(ours, internal, context) == []
    verdict = _reference_validates(tmp_path, reference_election.record_dir, ours)
    assert set(verdict) == {b.object_id for b in ours}
    for v in verdict.values():
        assert v == {"valid": True, "style_valid": True, "roundtrip": True}


MANIFESTS = [
    "manifest-minimal.json",
    "manifest-small.json",
    "manifest-full.json",
    "manifest-hamilton-general.json",
]


def test_manifest_hashes_equal_the_reference():
    require_oracle()
    paths = [REFERENCE_DATA / m for m in MANIFESTS]
    out = run_oracle("manifest_hashes.py", *paths, "fake")
    assert len(out) == len(paths) + 1
    for key, ref in out.items():
        m = Manifest.from_json(_load(Path(key)) if key != "fake" else ref["manifest"])
        internal = InternalManifest.from_manifest(m)
        assert to_hex(internal.manifest_hash) == ref["manifest_hash"], key
        assert m.is_valid() == ref["valid"]
        assert {c.object_id: to_hex(c.description_hash) for c in internal.contests} == ref["contests"]
        assert {f"{c}/{s}": to_hex(h) for (c, s), h in internal.selection_hashes.items()} == ref["selections"]
        assert m.to_json() == ref["manifest"]


@pytest.mark.parametrize(
    ("manifest", "count"), [("manifest-small.json", 4), ("manifest-hamilton-general.json", 2)]
)
def test_encryption_equals_the_reference_on_sample_manifests(manifest: str, count: int):
    """Several styles, n-of-m contests, null votes, undervotes, overvotes and a write-in."""
    require_oracle()
    path = REFERENCE_DATA / manifest
    out = run_oracle("encrypt_ballots.py", path, count, 3)
    internal = InternalManifest.from_manifest(Manifest.from_json(_load(path)))
    context = ElectionContext.from_json(out["context"])
    assert context.to_json() == out["context"]
    styles = set()
    for item in out["ballots"]:
        plain = PlaintextBallot.from_json(item["plaintext"])
        ref = CiphertextBallot.from_json(item["ciphertext"])
        styles.add(plain.style_id)
        ours = encrypt_ballot(plain, internal, context, ref.code_seed, ref.nonce, timestamp=ref.timestamp)
        assert ours.to_json() == item["ciphertext"]
        validate_ballot(make_submitted(ours, BallotBoxState.CAST), internal, context)
    assert len(styles) == min(count, len(internal.ballot_styles))
