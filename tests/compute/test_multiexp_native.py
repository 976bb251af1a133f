"""The native multi-exponentiation (compute/_multiexp.c) against its oracle, the Python implementation
(compute.multiexp.multiexp_python); under valgrind memcheck in test_native_memcheck.py."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from types import ModuleType

import gmpy2
import pytest
from gmpy2 import mpz

from compute import multiexp as me
from compute.constants import G, P, Q
from compute.group import g_pow_p
from compute.multiexp import MAX_WINDOW, choose_window, multiexp, multiexp_python


def _native() -> ModuleType:
    assert me.native is not None, (
        "compute._multiexp is not built: install libgmp-dev and a C compiler (scripts/services.sh does), "
        "then `pip install -e .` (or `python -c 'from setuptools import setup; setup()' build_ext --inplace`)"
    )
    return me.native


def _naive(bases: Sequence[int], exps: Sequence[int], modulus: int = P) -> mpz:
    acc = mpz(1)
    for b, e in zip(bases, exps, strict=True):
        acc = acc * gmpy2.powmod(b, e, modulus) % modulus
    return acc


def _element() -> mpz:
    """A random element of Z_p^*, almost never in the order-q subgroup."""
    return mpz(secrets.randbelow(int(P) - 1) + 1)


def test_native_module_is_built():
    """No silent fallback: where the tests run (CI included) the extension must be there and used."""
    native = _native()
    bases, exps = [_element() for _ in range(3)], [5, 6, 7]
    assert multiexp(bases, exps) == native.multiexp(bases, exps, P, 0, MAX_WINDOW) == _naive(bases, exps)


@pytest.mark.parametrize("n", [2, 3, 8, 31, 150])
@pytest.mark.parametrize("bits", [1, 2, 64, 65, 256, "mixed"])
def test_native_equals_python_on_random_inputs(n: int, bits: int | str):
    native = _native()
    bases = [_element() for _ in range(n)]
    if bits == "mixed":
        exps = [secrets.randbits(secrets.choice([1, 63, 64, 128, 256, 257])) for _ in range(n)]
    else:
        exps = [secrets.randbits(int(bits)) for _ in range(n)]
    expected = multiexp_python(bases, exps)
    assert native.multiexp(bases, exps, P, 0, MAX_WINDOW) == expected
    assert multiexp(bases, exps) == expected
    for window in (1, 3, 7):
        assert native.multiexp(bases, exps, P, window, MAX_WINDOW) == expected
    if n <= 31:
        assert expected == _naive(bases, exps)


def test_native_equals_python_on_a_large_batch():
    """Enough terms for wide windows (the cost model picks 7 bits here) and a long bucket table."""
    native = _native()
    bases = [_element() for _ in range(1500)]
    exps = [secrets.randbits(64) for _ in range(1500)]
    assert choose_window(exps) >= 7
    expected = multiexp_python(bases, exps)
    assert native.multiexp(bases, exps, P, 0, MAX_WINDOW) == expected
    assert native.multiexp(bases, exps, P, 12, MAX_WINDOW) == expected  # digits across limbs


def test_native_edge_cases():
    native = _native()
    x, y = _element(), _element()
    cases = [
        ([], []),
        ([x], [0]),
        ([x], [1]),
        ([x], [Q]),
        ([x, y], [0, 0]),
        ([x, y], [1, 0]),
        ([x, y], [1, 1]),
        ([mpz(1)] * 5, [secrets.randbits(256) for _ in range(5)]),
        ([P - 1] * 4, [1, 2, 3, 2**256 - 1]),  # the order-2 element
        ([P - 1, x, mpz(1), y], [1, 2**64 - 1, 2**64, 2**200 + 1]),
        ([mpz(0), x, y], [5, 1, 2]),  # a zero base zeroes the product
        ([P, x], [1, 1]),  # bases at or past the modulus reduce
        ([P + 3, 2 * P + 1, 2**5000 + 7, x], [3, 9, 2, 1]),
        ([-x, mpz(-1), y], [3, 7, 1]),  # negative bases, as Python's % treats them
        ([G, G, G], [Q - 1, 1, 0]),  # the same base object twice
        ([_element() for _ in range(9)], [2**4096 + 5, *[secrets.randbits(64) for _ in range(8)]]),
    ]
    for bases, exps in cases:
        expected = multiexp_python(bases, exps)
        assert expected == _naive(bases, exps)
        got = native.multiexp(bases, exps, P, 0, MAX_WINDOW)
        assert got == expected, (bases, exps)
        assert type(got) is type(expected) is type(mpz(1))


def test_native_takes_python_ints_and_returns_mpz():
    native = _native()
    bases = [_element() for _ in range(10)]
    exps = [secrets.randbits(64) for _ in range(10)]
    expected = multiexp_python(bases, exps)
    for b, e in [(bases, exps), ([int(v) for v in bases], exps), (bases, [mpz(v) for v in exps])]:
        got = native.multiexp(b, e, int(P), 0, MAX_WINDOW)
        assert got == expected
        assert type(got) is type(mpz(1))
    assert native.multiexp(tuple(bases), tuple(exps), P, 0, MAX_WINDOW) == expected


@pytest.mark.parametrize(
    "modulus", [3, 5, 2**61 - 1, 2**64 + 13, 2**127 - 1, 2**521 - 1, P, (P - 1) // 2 * 3 + 2]
)
def test_native_other_odd_moduli(modulus: int):
    native = _native()
    modulus = mpz(modulus) if modulus % 2 else mpz(modulus) + 1
    bases = [mpz(secrets.randbelow(int(modulus))) for _ in range(20)] + [modulus - 1, modulus + 2]
    exps = [secrets.randbits(100) for _ in range(22)]
    expected = _naive(bases, exps, modulus)
    assert multiexp_python(bases, exps, modulus) == expected
    assert native.multiexp(bases, exps, modulus, 0, MAX_WINDOW) == expected
    assert multiexp(bases, exps, modulus) == expected


def test_even_modulus_goes_to_python():
    """Montgomery needs an odd modulus: multiexp keeps the Python path for the rest."""
    native = _native()
    bases, exps = [mpz(3), mpz(5), mpz(7)], [10, 20, 30]
    assert multiexp(bases, exps, 2**64) == _naive(bases, exps, 2**64)
    for bad in (2**64, 1, 0, -7):
        with pytest.raises(ValueError, match="odd"):
            native.multiexp(bases, exps, bad, 0, MAX_WINDOW)


def test_native_refuses_what_python_refuses():
    native = _native()
    for call in (multiexp, multiexp_python):
        with pytest.raises(ValueError, match="negative"):
            call([G, G], [1, -1])
        with pytest.raises(ValueError, match="differ"):
            call([G, G], [1])
    with pytest.raises(ValueError, match="negative"):
        native.multiexp([G, G], [1, -1], P, 0, MAX_WINDOW)
    with pytest.raises(ValueError, match="differ"):
        native.multiexp([G, G], [1], P, 0, MAX_WINDOW)
    with pytest.raises(ValueError, match="window"):
        native.multiexp([G, G], [1, 1], P, 25, MAX_WINDOW)
    with pytest.raises(TypeError):
        native.multiexp([G, None], [1, 1], P, 0, MAX_WINDOW)
    with pytest.raises(TypeError):
        native.multiexp(5, [1], P, 0, MAX_WINDOW)


def test_native_holds_no_references():
    """Every reference taken on the inputs is given back, on success and on each error path."""
    native = _native()
    bases = [_element() for _ in range(20)]
    exps = [mpz(secrets.randbits(64)) for _ in range(20)]
    before = [sys.getrefcount(v) for v in (*bases, *exps, P)]
    for _ in range(50):
        native.multiexp(bases, exps, P, 0, MAX_WINDOW)
        native.multiexp(bases[:1], exps[:1], P, 0, MAX_WINDOW)
        with pytest.raises(ValueError):
            native.multiexp(bases, [*exps[:-1], -1], P, 0, MAX_WINDOW)
        with pytest.raises(TypeError):
            native.multiexp([*bases[:-1], None], exps, P, 0, MAX_WINDOW)
    assert [sys.getrefcount(v) for v in (*bases, *exps, P)] == before


def test_native_window_choice_equals_the_python_cost_model():
    native = _native()
    for n in (2, 9, 60, 500, 5000, 60_000):
        for mix in ([64], [256], [64, 256], [1, 64, 65, 255, 256]):
            lengths = [secrets.choice(mix) for _ in range(n)]
            exps = [1 << (b - 1) for b in lengths]
            assert native.choose_window(lengths, MAX_WINDOW) == choose_window(exps), (n, mix)


def test_native_uses_gmps_redc():
    # libgmp's mpn_redc_n (not in gmp.h: a weak symbol, checked against the REDC loop when the module
    # loads) serves 4096-bit moduli on Debian's libgmp; the loop stays for small moduli and other libgmps.
    # Every comparison with the Python oracle above then runs through it.
    assert _native().redc() == "gmp"


def _residues(n: int) -> list[mpz]:
    return [g_pow_p(secrets.randbelow(Q)) for _ in range(n)]


@pytest.mark.parametrize("n", [1, 2, 5, 40, 600])
@pytest.mark.parametrize("window", [None, 2, 5, 11])
def test_residue_buckets_native_equal_python(n: int, window: int | None):
    # the same verdict and product as the Python oracle: residues pass, one or two non-residues (their
    # weights drawn independently) are refused, and without residue bits the product is multiexp's
    native = _native()
    bases = _residues(n)
    weights = [secrets.randbits(64) for _ in bases]
    w = window or 0
    product = multiexp(bases, weights)
    assert native.multiexp(bases, weights, P, w, MAX_WINDOW, 64) == product
    assert me._pippenger_python(bases, weights, P, window, 64) == product
    assert me.multiexp_residues(bases, weights, 64, window=window) == product
    for twisted in ([0], [0, n - 1] if n > 1 else [0]):
        bad = list(bases)
        for i in twisted:
            bad[i] = P - bad[i]
        assert native.multiexp(bad, weights, P, w, MAX_WINDOW, 64) is None
        assert me._pippenger_python(bad, weights, P, window, 64) is None
        assert native.multiexp(bad, weights, P, w, MAX_WINDOW, 0) == me._pippenger_python(
            bad, weights, P, window, 0
        )


def test_residue_buckets_see_only_their_windows():
    # A non-residue whose exponent has no digit below the residue bits falls in no checked bucket: the
    # check answers for the low bits' weights only (what compute.validate's argument relies on). Two
    # non-residues in the same bucket of every window cancel: why the weights must be independent.
    native = _native()
    x, y = _residues(2)
    twisted = P - x
    assert native.multiexp([twisted, y], [1 << 70, 3], P, 5, MAX_WINDOW, 64) is not None
    assert native.multiexp([twisted, y], [(1 << 70) | 1, 3], P, 5, MAX_WINDOW, 64) is None
    assert native.multiexp([twisted, P - y], [5, 5], P, 4, MAX_WINDOW, 64) is not None
    assert me._pippenger_python([twisted, P - y], [5, 5], P, 4, 64) is not None
    assert native.multiexp([twisted, P - y], [5, 6], P, 4, MAX_WINDOW, 64) is None
    with pytest.raises(ValueError):
        native.multiexp([x], [1], P, 0, MAX_WINDOW, -1)


@pytest.mark.parametrize("window", [4, 5, 8])
def test_grouped_residues_refuse_one_non_residue_in_any_bucket(window: int):
    # From GROUPED_MIN_WINDOW bits the buckets are checked by groups (the digit's high half on the running
    # product, its low half multiplied together): a lone non-residue leaves both of its groups odd, so it
    # is refused whatever bucket its digit picks
    native = _native()
    x, y, z = _residues(3)
    for d in range(1, 1 << window):
        weights = [d, secrets.randbits(64), secrets.randbits(64)]
        assert native.multiexp([P - x, y, z], weights, P, window, MAX_WINDOW, 64) is None, d
        assert native.multiexp([x, y, z], weights, P, window, MAX_WINDOW, 64) is not None, d
        if d % 7 == 1:  # the oracle on a sample of the digits (it takes 20 ms a call at 8 bits)
            assert me._pippenger_python([P - x, y, z], weights, P, window, 64) is None, d


def test_grouped_residues_cancel_only_where_the_weights_are_not_independent():
    # Four non-residues at the corners of a rectangle of digits (high halves 1 and 2, low halves 1 and 2
    # of a 4-bit window) leave every group even: the grouped check passes them, where one symbol per
    # bucket (a 3-bit window) does not. Independent weights land so with probability 2^-c, as a second
    # non-residue in the same bucket would (docs/batch-verification.md#jacobi-symbols-by-bucket).
    native = _native()
    twisted = [P - x for x in _residues(4)]
    corners = [4 * 1 + 1, 4 * 1 + 2, 4 * 2 + 1, 4 * 2 + 2]
    assert native.multiexp(twisted, corners, P, 4, MAX_WINDOW, 64) is not None
    assert me._pippenger_python(twisted, corners, P, 4, 64) is not None
    assert native.multiexp(twisted, corners, P, 3, MAX_WINDOW, 64) is None
    assert me._pippenger_python(twisted, corners, P, 3, 64) is None
    assert native.multiexp(twisted[:3], corners[:3], P, 4, MAX_WINDOW, 64) is None
    # two in one low half's group (digits 1 and 5) only the high halves' ranges see, two in one high half's
    # range (digits 5 and 6) only the low halves' groups
    for pair in ([1, 5], [5, 6]):
        assert native.multiexp(twisted[:2], pair, P, 4, MAX_WINDOW, 64) is None, pair
        assert me._pippenger_python(twisted[:2], pair, P, 4, 64) is None, pair


def test_residue_symbols_bound_the_buckets():
    assert me.residue_symbols(11, 64) == 6 * (64 + 32)
    assert me.residue_symbols(8, 64) == 8 * (16 + 16)
    assert me.residue_symbols(3, 64) == 22 * 7  # one per bucket below GROUPED_MIN_WINDOW
    assert me.residue_symbols(3, 0) == 0
    assert me.residue_multiplies(8, 64) == 8 * (256 - 16)
    assert me.residue_multiplies(3, 64) == 0
