"""The small discrete log that ends a decryption: t from g^t (``electionguard.discrete_log``)."""

from __future__ import annotations

import threading

import gmpy2
from gmpy2 import mpz

from compute.constants import ONE, G, P
from compute.decryption_share import DecryptionError
from compute.group import g_pow_p


class DiscreteLog:
    """log_g of small values. A table of g^0..g^(m-1) keyed by the low 64 bits of each element (a hit is
    confirmed by one exponentiation), grown on demand up to ``m``; beyond it, giant steps of g^-m.
    So memory stays at ~100 bytes per table entry even for counts in the millions."""

    def __init__(self, table_size: int = 1 << 16, max_exponent: int = 100_000_000) -> None:
        self._m = table_size
        self._max = max_exponent
        self._table: dict[int, int] = {1: 0}
        self._last = ONE  # g^(_next - 1)
        self._next = 1
        self._lock = threading.Lock()
        self._giant: mpz | None = None  # g^-m, made on first need

    @staticmethod
    def _key(x: mpz) -> int:
        return int(x & 0xFFFFFFFFFFFFFFFF)

    def _grow_until(self, x: mpz | None) -> int | None:
        g = G
        with self._lock:
            k = self._key(x) if x is not None else None
            if k is not None and k in self._table and g_pow_p(self._table[k]) == x:
                return self._table[k]
            while self._next < self._m:
                e = self._next
                self._last = self._last * g % P
                self._next += 1
                # on a (2^-64) collision of low bits keep the smaller exponent; lookups confirm hits
                self._table.setdefault(self._key(self._last), e)
                if x is not None and self._last == x:
                    return e
        return None

    def _lookup(self, x: mpz) -> int | None:
        e = self._table.get(self._key(x))
        if e is not None and g_pow_p(e) == x:
            return e
        return None

    def __call__(self, x: mpz) -> int:
        x = mpz(x)
        e = self._lookup(x)
        if e is not None:
            return e
        if self._next < self._m:
            e = self._grow_until(x)
            if e is not None:
                return e
        if self._giant is None:
            self._giant = gmpy2.invert(gmpy2.powmod(G, self._m, P), P)
        y = x
        for step in range(1, self._max // self._m + 2):
            y = y * self._giant % P
            e = self._lookup(y)
            if e is not None:
                return step * self._m + e
        raise DecryptionError([f"no discrete log up to {self._max}"])


DISCRETE_LOG = DiscreteLog()
