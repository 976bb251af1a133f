"""Fixed-base exponentiation mod p with windowed precomputed tables.

For a base ``b`` and window width ``w`` the table holds ``b^(d * 2^(w*i))`` for every window ``i`` of a
256-bit exponent and every digit ``d < 2^w``. An exponentiation is then one multiply-and-reduce per
non-zero digit (at most 32 with 8-bit windows) instead of ~256 squarings plus multiplies: about 0.17 ms
against 1.1 ms for ``powmod`` (``docs/field-notes.md#gmpy2-costs``). A table costs 4 MiB (8-bit windows)
and ~0.1 s to build, so tables are cached per base (the generator g and the election public key K) and
only built for bases that are used many times. The default window is 10 bits (26 multiplies per
exponentiation, 13 MiB per table, about 20% faster than 8 bits); ``AMARVOTE_FIXEDBASE_WINDOW`` overrides
it (8 halves the memory). Encryption, which spends most of its time here (seven exponentiations of g or K
per selection), uses wider tables of ``ENCRYPTION_WINDOW`` = 13 bits (20 windows, 19 multiplies instead of
25): 76 MiB per native table (its top row holds only the 9 bits left of 256), 80 MiB of entries for the
Python one, about 0.55 s to build natively. An encrypting process holds two of them (g and its election
key), each under 100 MiB; ``encryption_pow`` reaches them. Other workers keep the 10-bit tables, or none.

Where the extension ``compute._multiexp`` is built, a table lives in one C buffer in Montgomery form and
``pow`` is a native loop of Montgomery products with the GIL released (about 3.3 us a multiply against 4.5
through gmpy2, and no Python work per digit); the Python table below is its oracle and the fallback.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from types import ModuleType

import gmpy2
from gmpy2 import mpz

from compute.constants import ONE, G, P, Q

native: ModuleType | None
try:
    from compute import _multiexp as native
except ImportError:  # not built (no compiler or libgmp-dev): the Python table, same results
    native = None

EXPONENT_BITS = 256  # exponents are reduced mod q < 2^256
DEFAULT_WINDOW = int(os.environ.get("AMARVOTE_FIXEDBASE_WINDOW", "10"))
ENCRYPTION_WINDOW = 13
_NATIVE_MAX_WINDOW = 20  # compute/_multiexp.c, FIXEDBASE_MAX_WINDOW


class FixedBaseTable:
    """``pow(e)`` = base^e mod p using a table of width-``window`` digits: natively (``compute._multiexp``,
    the rows in Montgomery form in one C buffer) when the extension is built, else in Python.
    ``use_native=False`` forces the Python table, the native one's test oracle."""

    __slots__ = ("base", "exponent_bits", "mask", "native", "nwin", "rows", "window")

    def __init__(
        self,
        base: int,
        window: int = DEFAULT_WINDOW,
        exponent_bits: int = EXPONENT_BITS,
        use_native: bool = True,
    ) -> None:
        self.base = mpz(base)
        self.window = window
        self.exponent_bits = exponent_bits
        self.mask = (1 << window) - 1
        self.nwin = -(-exponent_bits // window)
        self.rows: list[list[mpz]] = []
        self.native: object | None = None
        if use_native and native is not None and window <= _NATIVE_MAX_WINDOW:
            self.native = native.fixedbase_table(self.base, P, window, exponent_bits)
            return
        rows = self.rows
        row_base = self.base % P
        for _ in range(self.nwin):
            row = [ONE, row_base]
            x = row_base
            for _ in range(2, 1 << window):
                x = x * row_base % P
                row.append(x)
            rows.append(row)
            # next row's unit is base^(2^(w*(i+1))) = (last row entry) * row_base
            row_base = x * row_base % P

    def nbytes(self) -> int:
        """The memory the table's entries take (the native table trims its top row to exponent_bits)."""
        if self.native is not None and native is not None:
            return int(native.fixedbase_nbytes(self.native))
        return sum(len(row) for row in self.rows) * (P.bit_length() + 7) // 8

    def pow(self, e: int) -> mpz:
        if self.native is not None and native is not None:
            if e < 0 or e.bit_length() > self.exponent_bits:
                return gmpy2.powmod(self.base, e, P)
            return native.fixedbase_pow(self.native, e)
        if e < 0 or e.bit_length() > self.nwin * self.window:
            # outside the table's range (rare: callers reduce mod q); stay correct
            return gmpy2.powmod(self.base, e, P)
        if self.window == 8:
            acc = ONE
            for row, d in zip(self.rows, int(e).to_bytes(self.nwin, "little"), strict=True):
                if d:
                    acc = acc * row[d] % P
            return acc
        acc = ONE
        mask, w = self.mask, self.window
        for row in self.rows:
            d = e & mask
            if d:
                acc = acc * row[d] % P
            e >>= w
            if not e:
                break
        return acc


_lock = threading.Lock()
_cache: OrderedDict[tuple[int, int], FixedBaseTable] = OrderedDict()
_CACHE_SIZE = 3  # besides g: a couple of election keys (13 MiB each with 10-bit windows, 76 MiB with 13)


def table_for(base: int, window: int = DEFAULT_WINDOW) -> FixedBaseTable:
    """The cached table for ``base`` (built on first use; least recently used tables are dropped)."""
    key = (int(base), window)
    with _lock:
        t = _cache.get(key)
        if t is not None:
            _cache.move_to_end(key)
            return t
    t = FixedBaseTable(base, window)
    with _lock:
        _cache[key] = t
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE + 1:  # +1: never evict g because of K churn
            for k in _cache:
                if k[0] != int(G):
                    del _cache[k]
                    break
    return t


_g_table: FixedBaseTable | None = None


def g_table() -> FixedBaseTable:
    global _g_table
    if _g_table is None:
        _g_table = table_for(G)
    return _g_table


# A process that needs g^e only a few times (a verifier checking a record's guardians and g^t for each
# decrypted count, a small decryption) is better off without the table: it costs about as much to build as
# a hundred plain powmods of 256-bit exponents (0.04 to 0.15 s, docs/field-notes.md), so the first
# exponentiations are plain powmods and the table is built once their exponent bits have paid for it (the
# ski-rental rule: never more than twice the better choice's cost). A plain powmod costs its exponent's
# length: g^t for a tally's small count is cheap either way.
G_POWMOD_BITS_BEFORE_TABLE = 100 * 256
_g_powmod_bits = 0


def g_pow(e: int) -> mpz:
    """g^e mod p: plain powmods at first, then via the generator's table."""
    global _g_powmod_bits
    if _g_table is None and _g_powmod_bits < G_POWMOD_BITS_BEFORE_TABLE:
        _g_powmod_bits += int(e).bit_length()  # racy between threads, harmlessly: a few more or fewer
        return gmpy2.powmod(G, e, P)
    return g_table().pow(e)


_last: FixedBaseTable | None = None


def fixed_pow(base: int, e: int) -> mpz:
    """base^e mod p via the base's cached table (build cost amortised over many calls)."""
    global _last
    t = _last
    if t is None or t.base != base:  # one election key at a time is the common case: skip the cache
        t = _last = table_for(base)
    return t.pow(e)


_enc_g: FixedBaseTable | None = None
_enc_last: FixedBaseTable | None = None


def encryption_pow(base: int, e: int) -> mpz:
    """base^e mod p via the base's ``ENCRYPTION_WINDOW`` table: for g and the election key while
    encrypting, where the wider table's build cost and memory pay for themselves."""
    global _enc_g, _enc_last
    if base == G:
        if _enc_g is None:
            _enc_g = table_for(G, ENCRYPTION_WINDOW)
        return _enc_g.pow(e)
    t = _enc_last
    if t is None or t.base != base:
        t = _enc_last = table_for(base, ENCRYPTION_WINDOW)
    return t.pow(e)


def cached_pow(base: int, e: int) -> mpz:
    """base^e mod p through a table if one is already built for ``base``, else one powmod: for a few
    exponentiations per batch (a batch check's g and K), never worth building a table for."""
    with _lock:
        for (b, _w), t in reversed(_cache.items()):
            if b == base:
                return t.pow(e)
    return gmpy2.powmod(base, e, P)


def exp_mod_q(e: int) -> int:
    """Exponents of g and K may be reduced mod q (both have order q); keeps them in table range."""
    return e % Q
