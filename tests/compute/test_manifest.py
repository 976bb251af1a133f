"""Manifest JSON, hashes, placeholders and the simple-manifest builder."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from ballot_helpers import two_contest_manifest

from compute.group import to_hex
from compute.hashing import hash_elems
from compute.manifest import (
    InternalManifest,
    Manifest,
    SelectionDescription,
    build_simple_manifest,
    iso_date_string,
    placeholder_selections_for,
)

REFERENCE_DATA = Path(__file__).resolve().parents[1] / "data" / "reference-data"
SAMPLES = sorted(REFERENCE_DATA.glob("manifest-*.json")) + sorted(
    REFERENCE_DATA.glob("election_manifest_*.json")
)

# computed by the reference electionguard 1.4.0 (Manifest.crypto_hash) on these files
REFERENCE_HASHES = {
    "manifest-minimal.json": "2B846F3DAFAC770B426195DDD5322ED4E9DA8129F9848B04F7E49C8F872513CF",
    "manifest-hamilton-general.json": "C02919B0A6BC022C5E56D6C51985078AF9A94359C12DEF441574189457B9D52B",
}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sample_manifests_roundtrip_json(path: Path):
    raw = json.loads(path.read_text())
    m = Manifest.from_json(raw)
    if path.name.startswith("manifest-"):  # written by the reference's serializer: nulls included
        assert m.to_json() == raw
    assert Manifest.from_json(m.to_json()) == m
    assert m.is_valid()


@pytest.mark.parametrize("name", sorted(REFERENCE_HASHES))
def test_manifest_hash_matches_reference_vectors(name: str):
    path = REFERENCE_DATA / name
    assert to_hex(Manifest.from_json(json.loads(path.read_text())).crypto_hash()) == REFERENCE_HASHES[name]


def test_hash_changes_with_any_hashed_field():
    m = two_contest_manifest()
    h = m.crypto_hash()
    c0 = m.contests[0]
    variants = [
        dataclasses.replace(m, election_scope_id="other"),
        dataclasses.replace(m, start_date=m.start_date + timedelta(seconds=1)),
        dataclasses.replace(m, contests=(dataclasses.replace(c0, number_elected=2), *m.contests[1:])),
        dataclasses.replace(
            m,
            contests=(
                dataclasses.replace(c0, ballot_selections=c0.ballot_selections[::-1]),
                *m.contests[1:],
            ),
        ),
    ]
    assert all(v.crypto_hash() != h for v in variants)
    # microseconds are dropped by the reference's date format, so they do not change the hash
    assert dataclasses.replace(m, start_date=m.start_date.replace(microsecond=5)).crypto_hash() == h


def test_iso_date_string_like_the_reference():
    aware = datetime(2020, 3, 1, 8, 0, 0, 123, tzinfo=timezone(timedelta(hours=-5)))
    assert iso_date_string(aware) == "2020-03-01T13:00:00Z"
    assert iso_date_string(datetime(2020, 3, 1, 8, 0, 0, 999)) == "2020-03-01T08:00:00Z"


def test_selection_and_contest_hashes_follow_the_reference_formula():
    m = two_contest_manifest()
    c = m.contests[1]
    s = c.ballot_selections[0]
    assert s.crypto_hash() == hash_elems(s.object_id, s.sequence_order, s.candidate_id)
    expected = hash_elems(
        c.object_id,
        c.sequence_order,
        c.electoral_district_id,
        c.vote_variation,
        c.ballot_title,
        c.ballot_subtitle,
        c.name,
        c.number_elected,
        c.votes_allowed,
        list(c.ballot_selections),
    )
    assert c.crypto_hash() == expected


def test_placeholders_named_and_numbered_like_the_reference():
    m = two_contest_manifest()
    council = m.contests[1]
    ph = placeholder_selections_for(council)
    assert ph == (
        SelectionDescription("council-10-placeholder", 10, "council-10-candidate"),
        SelectionDescription("council-11-placeholder", 11, "council-11-candidate"),
    )
    internal = InternalManifest.from_manifest(m)
    wp = internal.contest_for("council")
    assert wp is not None and wp.placeholder_selections == ph
    # placeholders are not part of the contest description hash
    assert wp.crypto_hash() == council.crypto_hash()
    assert wp.is_valid()
    assert wp.selection_for("council-11-placeholder") == ph[1]
    assert internal.selection_hashes[("council", "council-10-placeholder")] == ph[0].crypto_hash()
    assert [c.object_id for c in internal.get_contests_for("ballot-style-1")] == ["contest-1", "council"]
    with pytest.raises(KeyError):
        internal.get_ballot_style("nope")


def test_build_simple_manifest():
    m = build_simple_manifest(
        ["Ann", "Bob", "Cid"], ["Red", "Blue", "Red"], max_choices=2, election_name="Board"
    )
    assert m.is_valid()
    assert len(m.contests) == 1 and len(m.contests[0].ballot_selections) == 3
    assert m.contests[0].vote_variation == "n_of_m" and m.contests[0].number_elected == 2
    assert len(m.parties) == 2 and m.candidates[2].party_id == m.candidates[0].party_id
    assert Manifest.from_json(m.to_json()) == m
    one = build_simple_manifest(["Ann", "Bob"])
    assert one.contests[0].vote_variation == "one_of_m"
    assert one.crypto_hash() == build_simple_manifest(["Ann", "Bob"]).crypto_hash()
    assert one.crypto_hash() != build_simple_manifest(["Ann", "Bobby"]).crypto_hash()
    assert build_simple_manifest(["A"], start_date=datetime(2024, 1, 1, tzinfo=UTC)).start_date.year == 2024
    for bad in (
        lambda: build_simple_manifest([]),
        lambda: build_simple_manifest(["A", "A"]),
        lambda: build_simple_manifest(["A", "B"], max_choices=3),
        lambda: build_simple_manifest(["A", "B"], ["X"]),
    ):
        with pytest.raises(ValueError):
            bad()


def test_is_valid_rejects_duplicates_and_dangling_references():
    m = two_contest_manifest()
    assert m.is_valid()
    assert not dataclasses.replace(m, contests=(m.contests[0], m.contests[0])).is_valid()
    c = dataclasses.replace(m.contests[0], electoral_district_id="nowhere")
    assert not dataclasses.replace(m, contests=(c, *m.contests[1:])).is_valid()
    c = dataclasses.replace(m.contests[0], number_elected=9)
    assert not dataclasses.replace(m, contests=(c, *m.contests[1:])).is_valid()
