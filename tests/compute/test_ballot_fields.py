"""Untrusted ballot JSON: every number out of the range the reference and our codec give it is refused at
parse time with a ValueError naming the field, never later as a struct or overflow error; proof usage
strings are the reference's only; ``extended_data`` is dropped."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from ballot_helpers import make_election, submitted_ballots

from compute.ballot import (
    SubmittedBallot,
    encode_submitted_ballot,
    without_extended_data,
)
from compute.constants import P, Q
from compute.group import FieldError, from_hex_checked, to_hex


@pytest.fixture(scope="module")
def ballot_json() -> dict[str, Any]:
    (b,) = submitted_ballots(make_election(), 1)
    return b.to_json()


def _sel(d: dict[str, Any]) -> dict[str, Any]:
    sel: dict[str, Any] = d["contests"][0]["ballot_selections"][1]
    return sel


def _set(path: Callable[[dict[str, Any]], dict[str, Any]], key: str, value: Any) -> Callable[[dict], None]:
    def change(d: dict[str, Any]) -> None:
        path(d)[key] = value

    return change


TOP = lambda d: d  # noqa: E731
CONTEST = lambda d: d["contests"][0]  # noqa: E731
CPROOF = lambda d: d["contests"][0]["proof"]  # noqa: E731
EXT = lambda d: d["contests"][0]["extended_data"]  # noqa: E731
SEL = _sel
SPROOF = lambda d: _sel(d)["proof"]  # noqa: E731
SCT = lambda d: _sel(d)["ciphertext"]  # noqa: E731

CASES = [
    # (name, change, the field path the error names)
    ("timestamp 2^70", _set(TOP, "timestamp", 2**70), "timestamp"),
    ("timestamp -2^63-1", _set(TOP, "timestamp", -(2**63) - 1), "timestamp"),
    ("timestamp a string", _set(TOP, "timestamp", "1700000000"), "timestamp"),
    ("timestamp a float", _set(TOP, "timestamp", 1.5), "timestamp"),
    ("timestamp a boolean", _set(TOP, "timestamp", True), "timestamp"),
    ("code >= 2^256", _set(TOP, "code", "1" + "0" * 64), "code"),
    ("code = q", _set(TOP, "code", to_hex(Q)), "code"),
    ("code_seed -1", _set(TOP, "code_seed", "-1"), "code_seed"),
    ("code_seed 0x prefix", _set(TOP, "code_seed", "0x1F"), "code_seed"),
    ("manifest_hash not hex", _set(TOP, "manifest_hash", "XYZ"), "manifest_hash"),
    ("crypto_hash empty", _set(TOP, "crypto_hash", ""), "crypto_hash"),
    ("crypto_hash a number", _set(TOP, "crypto_hash", 5), "crypto_hash"),
    ("ballot nonce -1", _set(TOP, "nonce", "-1"), "nonce"),
    (
        "contest sequence order 2^31",
        _set(CONTEST, "sequence_order", 2**31),
        "contests[contest-1].sequence_order",
    ),
    (
        "contest description hash = q",
        _set(CONTEST, "description_hash", to_hex(Q)),
        "contests[contest-1].description_hash",
    ),
    (
        "accumulation pad = p",
        _set(CONTEST, "ciphertext_accumulation", {"pad": to_hex(P), "data": "01"}),
        "contests[contest-1].ciphertext_accumulation.pad",
    ),
    ("contest proof constant 2^64", _set(CPROOF, "constant", 2**64), "contests[contest-1].proof.constant"),
    ("contest proof constant -1", _set(CPROOF, "constant", -1), "contests[contest-1].proof.constant"),
    ("contest proof response = q", _set(CPROOF, "response", to_hex(Q)), "contests[contest-1].proof.response"),
    ("contest proof usage", _set(CPROOF, "usage", "voter-id:ALICE"), "contests[contest-1].proof.usage"),
    ("extended_data pad -1", _set(EXT, "pad", "-1"), "contests[contest-1].extended_data.pad"),
    ("extended_data pad 2^5000", _set(EXT, "pad", to_hex(2**5000)), "contests[contest-1].extended_data.pad"),
    ("extended_data data not a string", _set(EXT, "data", 7), "contests[contest-1].extended_data.data"),
    (
        "selection sequence order -2^31-1",
        _set(SEL, "sequence_order", -(2**31) - 1),
        "contests[contest-1].ballot_selections[Bob].sequence_order",
    ),
    (
        "selection object id not a string",
        _set(SEL, "object_id", ["Bob"]),
        "contests[contest-1].ballot_selections[1].object_id",
    ),
    (
        "selection pad = p",
        _set(SCT, "pad", to_hex(P)),
        "contests[contest-1].ballot_selections[Bob].ciphertext.pad",
    ),
    (
        "selection data 2^4096",
        _set(SCT, "data", to_hex(2**4096)),
        "contests[contest-1].ballot_selections[Bob].ciphertext.data",
    ),
    (
        "selection proof commitment -1",
        _set(SPROOF, "proof_one_data", "-1"),
        "contests[contest-1].ballot_selections[Bob].proof.proof_one_data",
    ),
    (
        "selection proof challenge = q",
        _set(SPROOF, "challenge", to_hex(Q)),
        "contests[contest-1].ballot_selections[Bob].proof.challenge",
    ),
    (
        "selection proof usage",
        _set(SPROOF, "usage", "voter-id:ALICE-SMITH-1234"),
        "contests[contest-1].ballot_selections[Bob].proof.usage",
    ),
    (
        "selection nonce >= q",
        _set(SEL, "nonce", "F" * 64),
        "contests[contest-1].ballot_selections[Bob].nonce",
    ),
]


@pytest.mark.parametrize(("name", "change", "path"), CASES, ids=[c[0] for c in CASES])
def test_out_of_range_fields_are_refused_naming_the_field(
    name: str, change: Callable[[dict], None], path: str, ballot_json: dict[str, Any]
) -> None:
    d = copy.deepcopy(ballot_json)
    change(d)
    with pytest.raises(ValueError) as info:
        SubmittedBallot.from_json(d)
    assert str(info.value).startswith(f"{path}: "), str(info.value)


def test_the_reference_usage_strings_and_edge_values_are_accepted(ballot_json: dict[str, Any]) -> None:
    d = copy.deepcopy(ballot_json)
    assert _sel(d)["proof"]["usage"] == "Prove selection's value (0 or 1)"
    assert d["contests"][0]["proof"]["usage"] == "Prove value within selection's limit"
    d["timestamp"], d["code_seed"] = 2**63 - 1, to_hex(Q - 1)
    d["contests"][0]["proof"]["constant"] = 2**64 - 1
    del _sel(d)["proof"]["usage"]  # absent: the reference's default
    b = SubmittedBallot.from_json(d)
    assert b.timestamp == 2**63 - 1
    assert encode_submitted_ballot(b)  # every parsed value fits the codec


def test_extended_data_is_dropped(ballot_json: dict[str, Any]) -> None:
    d = copy.deepcopy(ballot_json)
    assert all(c["extended_data"] is not None for c in d["contests"])
    d["contests"][0]["extended_data"]["data"] = "voter-id:ALICE-SMITH-1234 " + "A" * 3_000_000
    stripped = without_extended_data(SubmittedBallot.from_json(d))
    assert all(c.extended_data is None for c in stripped.contests)
    out = json.dumps(stripped.to_json())
    assert "ALICE" not in out and len(out) < 100_000
    # nothing a hash covers changed
    assert stripped.crypto_hash == stripped.crypto_hash_with(stripped.manifest_hash)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 0A",
        "0A ",
        "0A\n",
        "+0A",
        "-0A",
        "0x1F",
        "0X1F",
        "1_0",
        "0A 1F",
        "\u0660\u0661",
        "g0",
        "é0",
        "1" * 65,
    ],
)
def test_an_element_is_hex_digits_only(text: str) -> None:
    """What ``mpz(s, 16)`` or a lenient decoder would take (space, sign, prefix, underscore, other
    scripts' digits) or more digits than q has bytes is refused; any case and odd counts are not."""
    with pytest.raises(FieldError, match="hex digits"):
        from_hex_checked(text, Q, "x")


def test_an_element_takes_any_case_and_odd_counts() -> None:
    for text, value in [
        ("A", 10),
        ("0a", 10),
        ("fF", 255),
        ("100", 256),
        ("0" * 64, 0),
        ("00" + "1" * 61, int("1" * 61, 16)),
    ]:
        assert from_hex_checked(text, Q, "x") == value
    assert from_hex_checked(to_hex(P - 1), P, "x") == P - 1
    with pytest.raises(FieldError, match="below p"):
        from_hex_checked(to_hex(P), P, "x")
