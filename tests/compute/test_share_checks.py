"""The batched Lagrange reconstruction check (compute.share_checks.reconstruction_problems), and what its
``parts_checked`` flag hands over to the caller."""

from __future__ import annotations

import secrets

import pytest
from gmpy2 import mpz

from compute.constants import G, P
from compute.group import g_pow_p, rand_q
from compute.multiexp import product_of_powers
from compute.share_checks import Reconstruction, reconstruction_problems

RESIDUE_MODES = pytest.mark.parametrize("by_buckets", [False, True], ids=["per element", "per bucket"])


def _claims(n: int, weights: dict[str, mpz]) -> list[Reconstruction]:
    claims = []
    for i in range(n):
        parts = {g: g_pow_p(rand_q()) for g in weights}
        share = product_of_powers(list(parts.values()), list(weights.values()))
        claims.append(Reconstruction(f"claim {i}", share, parts, weights))
    return claims


@RESIDUE_MODES
def test_reconstructions_name_each_false_claim(by_buckets: bool, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("compute.multiexp.residues_by_buckets", lambda window, elements, bits: by_buckets)
    claims = _claims(16, {"1": rand_q(), "2": rand_q(), "3": rand_q()})
    assert reconstruction_problems(claims) == []
    assert reconstruction_problems(claims, parts_checked=True) == []
    claims[5].share = claims[5].share * G % P
    # the reconstructed share's order-2 twist: its own symbol sees it, with the flag too (only the parts
    # are the caller's)
    claims[9].share = P - claims[9].share
    for parts_checked in (False, True):
        for _ in range(6):
            assert reconstruction_problems(claims, parts_checked) == ["claim 5", "claim 9"]


@RESIDUE_MODES
def test_a_false_claim_hidden_by_a_twisted_part_is_the_callers_once_it_says_the_parts_are_checked(
    by_buckets: bool, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("compute.multiexp.residues_by_buckets", lambda window, elements, bits: by_buckets)
    # p - M_l under an odd Lagrange weight makes the claim false by a factor -1 exactly, which the
    # batch's random combination sees only when the claim's weight r is odd. The parts' Jacobi symbols
    # refuse the batch whatever r is; with parts_checked those symbols are the caller's (it checks every
    # part as a Chaum-Pedersen statement's share, compute.verify's _ShareChecker), so with even weights
    # (forced here) the false claim then passes this check alone.
    weights = {"1": mpz(2 * (rand_q() // 2) + 1), "2": rand_q(), "3": rand_q()}
    claims = _claims(16, weights)
    claims[7].parts["1"] = P - claims[7].parts["1"]
    for _ in range(8):
        assert reconstruction_problems(claims) == ["claim 7"]
    monkeypatch.setattr(
        "compute.share_checks.weights", lambda n: [2 * secrets.randbits(63) for _ in range(n)]
    )
    assert reconstruction_problems(claims) == ["claim 7"]
    assert reconstruction_problems(claims, parts_checked=True) == []
