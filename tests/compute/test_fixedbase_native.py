"""The native fixed-base table (compute/_multiexp.c, fixedbase_*) against gmpy2.powmod and its oracle, the
Python FixedBaseTable (use_native=False); under valgrind memcheck in test_native_memcheck.py."""

from __future__ import annotations

import secrets
from types import ModuleType

import gmpy2
import pytest
from gmpy2 import mpz

from compute import fixedbase
from compute.constants import G, P, Q
from compute.fixedbase import ENCRYPTION_WINDOW, FixedBaseTable


def _native() -> ModuleType:
    assert fixedbase.native is not None, (
        "compute._multiexp is not built: install libgmp-dev and a C compiler (scripts/services.sh does), "
        "then `pip install -e .` (or `python -c 'from setuptools import setup; setup()' build_ext --inplace`)"
    )
    return fixedbase.native


def _order_r_element() -> mpz:
    """A quadratic residue outside the order-q subgroup."""
    return gmpy2.powmod(secrets.randbelow(int(P) - 3) + 2, 2 * Q, P)


def _edge_exponents(bits: int) -> list[int]:
    top = (1 << bits) - 1
    return [0, 1, 2, 3, top, top - 1, 1 << (bits - 1), *(secrets.randbits(bits) for _ in range(6))]


def test_tables_are_native_where_the_extension_is_built():
    _native()
    t = FixedBaseTable(G, 4, 16)
    assert t.native is not None and t.rows == []
    assert FixedBaseTable(G, 4, 16, use_native=False).native is None


@pytest.mark.parametrize("window", range(2, 15))
def test_native_pow_equals_powmod_and_the_python_table(window: int):
    _native()
    bits = 3 * window + 2  # several full rows and a trimmed top row, quickly even at 14 bits
    bases = [G, mpz(1), P - 1, mpz(0), _order_r_element(), secrets.randbelow(int(P)), P + 5, mpz(-7)]
    for base in bases:
        t = FixedBaseTable(base, window, bits)
        oracle = FixedBaseTable(base, window, bits, use_native=False) if window <= 8 else None
        for e in _edge_exponents(bits):
            want = gmpy2.powmod(base, e, P)
            assert t.pow(e) == want, (window, base, e)
            assert type(t.pow(e)) is mpz
            if oracle is not None:
                assert oracle.pow(e) == want, (window, base, e)


def test_exponents_outside_the_table_fall_back_to_powmod():
    _native()
    base = _order_r_element()
    t = FixedBaseTable(base, 5, 20)
    for e in [1 << 20, (1 << 25) - 1, 2**300 + 5, -1, -(2**20), mpz(-3)]:
        assert t.pow(e) == gmpy2.powmod(base, e, P), e
    with pytest.raises(ValueError, match="range"):
        fixedbase.native.fixedbase_pow(t.native, 1 << 20)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="range"):
        fixedbase.native.fixedbase_pow(t.native, -1)  # type: ignore[union-attr]


def test_full_width_encryption_table_on_the_exponents_encryption_uses():
    _native()
    k = gmpy2.powmod(G, secrets.randbelow(int(Q)), P)
    t = FixedBaseTable(k, ENCRYPTION_WINDOW)
    for e in [0, 1, Q - 1, Q, Q + 1, 2**256 - 1, 2**256, *(secrets.randbelow(int(Q)) for _ in range(20))]:
        assert t.pow(e) == gmpy2.powmod(k, e, P), e
        assert t.pow(int(e)) == gmpy2.powmod(k, e, P), e


def test_tables_of_two_bases_are_not_mixed_up():
    _native()
    a, b = _order_r_element(), _order_r_element()
    ta, tb = FixedBaseTable(a, 6, 64), FixedBaseTable(b, 6, 64)
    for _ in range(10):
        e = secrets.randbits(64)
        assert (ta.pow(e), tb.pow(e)) == (gmpy2.powmod(a, e, P), gmpy2.powmod(b, e, P))
    del ta  # freeing one table leaves the other intact
    assert tb.pow(12345) == gmpy2.powmod(b, 12345, P)


def test_native_table_rejects_bad_arguments():
    native = _native()
    with pytest.raises(ValueError):
        native.fixedbase_table(3, 100, 4, 16)  # even modulus
    with pytest.raises(ValueError):
        native.fixedbase_table(3, 1, 4, 16)
    with pytest.raises(ValueError):
        native.fixedbase_table(3, P, 0, 16)
    with pytest.raises(ValueError):
        native.fixedbase_table(3, P, 21, 16)
    with pytest.raises(ValueError):
        native.fixedbase_pow(object(), 3)  # not a table capsule
    with pytest.raises(TypeError):
        native.fixedbase_pow(native.fixedbase_table(3, P, 4, 16), None)


def test_native_table_memory_trims_the_top_row():
    native = _native()
    # 256 bits in 13-bit windows: 19 full rows of 2^13 and a top row of 9 bits, 512 bytes an entry
    t = native.fixedbase_table(G, P, 13, 256)
    assert native.fixedbase_nbytes(t) == (19 * 2**13 + 2**9) * 512
