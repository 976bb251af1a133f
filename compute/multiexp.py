"""Multi-exponentiation mod p: prod_i b_i^e_i with Pippenger's bucket method.

One pass per window of ``c`` exponent bits: each term multiplies its base into the bucket of its digit
(one multiply-and-reduce per non-zero digit), then the buckets are combined with running products
(about 2^(c+1) multiplies per window) and the accumulator is squared c times. With N terms of b bits the
cost is about N*b/c + (b/c)*2^(c+1) multiplies instead of N full exponentiations (~1.5*b multiplies
each), so short random exponents (64 bits) and large batches are where it wins. Terms with short
exponents only touch the low windows, so mixing 64-bit and 256-bit exponents in one call is fine.
``product_of_powers`` keeps plain powmods for the few terms where the buckets do not pay.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
from gmpy2 import mpz

from compute.constants import ONE, P


def _cost(c: int, digits_per_bit_total: int, nwin_bits: int) -> float:
    nwin = -(-nwin_bits // c)
    return digits_per_bit_total / c + nwin * (2 ** (c + 1))


def choose_window(exponents: Sequence[int]) -> int:
    total_bits = sum(e.bit_length() for e in exponents)
    max_bits = max((e.bit_length() for e in exponents), default=1)
    return min(range(2, 13), key=lambda c: _cost(c, total_bits, max_bits))


def multiexp(
    bases: Sequence[int], exponents: Sequence[int], modulus: int = P, window: int | None = None
) -> mpz:
    """prod bases[i]^exponents[i] mod ``modulus`` for non-negative exponents."""
    if len(bases) != len(exponents):
        raise ValueError("bases and exponents differ in length")
    terms = [(mpz(b), int(e)) for b, e in zip(bases, exponents, strict=True) if e]
    if not terms:
        return ONE
    if any(e < 0 for _, e in terms):
        raise ValueError("negative exponent")
    if len(terms) == 1:
        return gmpy2.powmod(terms[0][0], terms[0][1], modulus)
    c = window or choose_window([e for _, e in terms])
    mask = (1 << c) - 1
    max_bits = max(e.bit_length() for _, e in terms)
    nwin = -(-max_bits // c)
    # digits per term, extracted once (Python int ops are cheap next to a 4096-bit mulmod)
    digit_rows: list[list[int]] = []
    for _, e in terms:
        row = []
        while e:
            row.append(e & mask)
            e >>= c
        digit_rows.append(row)
    acc = ONE
    shift_pow = 1 << c
    for w in range(nwin - 1, -1, -1):
        if acc != ONE:
            acc = gmpy2.powmod(acc, shift_pow, modulus)
        buckets: list[mpz | None] = [None] * (mask + 1)
        for (b, _), row in zip(terms, digit_rows, strict=True):
            if w < len(row):
                d = row[w]
                if d:
                    cur = buckets[d]
                    buckets[d] = b if cur is None else cur * b % modulus
        # sum_d d * bucket[d] (multiplicatively) with a running product from the top digit down
        running: mpz | None = None
        total: mpz | None = None
        for d in range(mask, 0, -1):
            bd = buckets[d]
            if bd is not None:
                running = bd if running is None else running * bd % modulus
            if running is not None:
                total = running if total is None else total * running % modulus
        if total is not None:
            acc = acc * total % modulus
    return acc


def product_of_powers(bases: Sequence[mpz], exponents: Sequence[int]) -> mpz:
    """prod b^e mod p: plain powmods for a handful of terms (a quorum), multi-exponentiation beyond."""
    if len(bases) >= 8:
        return multiexp(bases, exponents)
    acc = ONE
    for b, e in zip(bases, exponents, strict=True):
        acc = acc * gmpy2.powmod(b, e, P) % P
    return acc
