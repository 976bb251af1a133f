"""Multi-exponentiation mod p: prod_i b_i^e_i with Pippenger's bucket method.

One pass per window of ``c`` exponent bits: each term multiplies its base into the bucket of its digit
(one multiply-and-reduce per non-zero digit), then the buckets are combined with running products
(about 2^(c+1) multiplies per window) and the accumulator is squared c times. With N terms of b bits the
cost is about N*b/c + (b/c)*2^(c+1) multiplies instead of N full exponentiations (~1.5*b multiplies
each), so short random exponents (64 bits) and large batches are where it wins. Terms with short
exponents only touch the low windows, so mixing 64-bit and 256-bit exponents in one call is fine.
The window is the one that minimises the multiplies counting each term only in the windows its exponent
reaches (``choose_window``), up to 16 bits (a bucket table of 2^16 elements, 34 MiB; batches reach it only
past about 2^17 terms); terms are sorted by length so that a window walks only the terms it holds.
``product_of_powers`` keeps plain powmods for the few terms where the buckets do not pay.

``multiexp`` runs the same method in C when the extension ``compute._multiexp`` is built (``pip install -e .``
builds it against Debian's libgmp-dev): the digit extraction and bucket loops leave Python, and every
multiply is a Montgomery product on reused buffers (docs/batch-verification.md#the-native-routine).
``multiexp_python`` is the pure-Python implementation, kept as its test oracle and as the fallback where
the extension could not be built (tests/compute/test_multiexp_native.py asserts that CI built it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from types import ModuleType

import gmpy2
from gmpy2 import mpz

from compute.constants import ONE, P

native: ModuleType | None
try:
    from compute import _multiexp as native
except ImportError:  # not built (no compiler or libgmp-dev): the Python implementation below serves
    native = None

# Bucket table of 2^c elements of 512 bytes (about 530 with the mpz header): 16 bits is 34 MiB at most,
# reached only by batches of about 2^17 terms or more (the cost model below picks the window).
MAX_WINDOW = 16
# The widest window the native routine takes (compute/_multiexp.c, MAX_WINDOW_LIMIT).
_NATIVE_MAX_WINDOW = 24


def _window_costs(lengths: Mapping[int, int], c: int) -> float:
    """Multiplies mod p for windows of ``c`` bits, ``lengths`` counting the exponents of each bit length:
    one per non-zero digit (a fraction 1 - 2^-c of the digits of random exponents), 2^(c+1) per window to
    combine its buckets, c squarings per window."""
    digits = sum(k * -(-b // c) for b, k in lengths.items())
    nwin = -(-max(lengths, default=1) // c)
    return digits * (1 - 2.0**-c) + nwin * (2 ** (c + 1) + c)


def choose_window(exponents: Sequence[int], max_window: int = MAX_WINDOW) -> int:
    """The window width that minimises the multiplies, counting each term only in the windows its
    exponent reaches (a batch mixes 64-bit and 256-bit exponents: the high windows hold few terms)."""
    lengths = Counter(e.bit_length() for e in exponents)  # few distinct lengths: the model sums those
    return min(range(2, max_window + 1), key=lambda c: _window_costs(lengths, c))


def multiplies(exponents: Sequence[int], window: int | None = None) -> float:
    """About how many multiplies mod p ``multiexp`` does for these exponents (its cost model)."""
    lengths = Counter(int(e).bit_length() for e in exponents if e)
    if not lengths:
        return 0.0
    return _window_costs(lengths, window or choose_window([int(e) for e in exponents if e]))


def multiexp(
    bases: Sequence[int], exponents: Sequence[int], modulus: int = P, window: int | None = None
) -> mpz:
    """prod bases[i]^exponents[i] mod ``modulus`` for non-negative exponents: natively when the extension
    is built and the modulus is odd (Montgomery), else ``multiexp_python``."""
    result = multiexp_residues(bases, exponents, 0, modulus, window)
    assert result is not None  # no residue windows: never refused
    return result


# From this window width the buckets' residues are checked by groups (``multiexp_residues``).
GROUPED_MIN_WINDOW = 4


def residue_symbols(window: int, residue_bits: int) -> int:
    """At most how many Jacobi symbols ``multiexp_residues`` computes with this window in the windows below
    bit ``residue_bits``: one per bucket of a narrow window; from ``GROUPED_MIN_WINDOW`` bits, one per group
    of buckets sharing the digit's high half and one per group sharing its low half."""
    windows = -(-residue_bits // window)
    if window < GROUPED_MIN_WINDOW:
        return windows * ((1 << window) - 1)
    return windows * ((1 << (window - window // 2)) + (1 << (window // 2)))


def residue_multiplies(window: int, residue_bits: int) -> int:
    """At most how many multiplies the residue check adds: the products of the low halves' groups."""
    if window < GROUPED_MIN_WINDOW:
        return 0
    return -(-residue_bits // window) * ((1 << window) - (1 << (window // 2)))


# What a bucket's Jacobi symbol (the extension's libgmp, Debian's 6.2.1) and a multiply mod p cost, in
# gmpy2.jacobi's of one element (gmpy2's own libgmp 6.3): 40, 4 and 30 us on 4096-bit operands, one core
# (docs/batch-verification.md#jacobi-symbols-by-bucket).
BUCKET_SYMBOL_COST = 4 / 3
MULTIPLY_COST = 0.14


def residues_by_buckets(window: int, elements: int, residue_bits: int = 64) -> bool:
    """Whether ``multiexp_residues``' bucket symbols cost less than one ``gmpy2.jacobi`` per element."""
    cost = (
        residue_symbols(window, residue_bits) * BUCKET_SYMBOL_COST
        + residue_multiplies(window, residue_bits) * MULTIPLY_COST
    )
    return cost < elements


def multiexp_residues(
    bases: Sequence[int],
    exponents: Sequence[int],
    residue_bits: int,
    modulus: int = P,
    window: int | None = None,
) -> mpz | None:
    """``multiexp``, and None unless the product of every bucket in the windows below bit ``residue_bits``
    is a quadratic residue mod ``modulus`` (an odd prime).

    When the low ``residue_bits`` bits of each exponent are an independent uniform weight, this rejects any
    base that is not a quadratic residue with probability at least 1 - 2^-residue_bits: given where the
    others fell, the last non-residue must land in the one cell of each window (a bucket, or digit 0) that
    evens out every bucket's count (docs/batch-verification.md#jacobi-symbols-by-bucket). The buckets are
    the ones the product is made of, so the symbols cost no multiply: ``residue_symbols`` of them."""
    if (
        native is not None
        and (window is None or 1 <= window <= _NATIVE_MAX_WINDOW)
        and (modulus is P or (modulus > 1 and modulus % 2 == 1))
    ):
        result: mpz | None = native.multiexp(bases, exponents, modulus, window or 0, MAX_WINDOW, residue_bits)
        return result
    return _pippenger_python(bases, exponents, modulus, window, residue_bits)


def multiexp_checking_residues(
    bases: Sequence[int],
    exponents: Sequence[int],
    elements: Sequence[int],
    residue_bits: int,
    window: int | None = None,
    by_buckets: bool | None = None,
) -> mpz | None:
    """``multiexp`` mod p, and None unless every one of ``elements`` is a quadratic residue: by the Jacobi
    symbols of the product's buckets (``multiexp_residues``) where those are fewer than one per element
    (``residues_by_buckets``; ``by_buckets`` True or False forces either), else one ``gmpy2.jacobi`` per
    element. For the buckets to vouch for them, ``elements`` must be among ``bases`` with an independent
    uniform weight in the low ``residue_bits`` bits of each exponent."""
    window = window or choose_window(exponents)
    if not elements:
        return multiexp_residues(bases, exponents, 0, window=window)
    if by_buckets is None:
        by_buckets = residues_by_buckets(window, len(elements), residue_bits)
    if not by_buckets and any(gmpy2.jacobi(x, P) != 1 for x in elements):
        return None
    return multiexp_residues(bases, exponents, residue_bits if by_buckets else 0, window=window)


def multiexp_python(
    bases: Sequence[int], exponents: Sequence[int], modulus: int = P, window: int | None = None
) -> mpz:
    """``multiexp`` in Python: the oracle of the native routine."""
    result = _pippenger_python(bases, exponents, modulus, window, 0)
    assert result is not None  # no residue windows: never refused
    return result


def _pippenger_python(
    bases: Sequence[int], exponents: Sequence[int], modulus: int, window: int | None, residue_bits: int
) -> mpz | None:
    """The bucket method in Python (``multiexp_python``, ``multiexp_residues``' oracle)."""
    if len(bases) != len(exponents):
        raise ValueError("bases and exponents differ in length")
    terms = [(int(e), mpz(b)) for b, e in zip(bases, exponents, strict=True) if e]
    if not terms:
        return ONE
    if any(e < 0 for e, _ in terms):
        raise ValueError("negative exponent")
    if len(terms) == 1:
        if residue_bits and gmpy2.jacobi(terms[0][1], modulus) != 1:
            return None
        return gmpy2.powmod(terms[0][1], terms[0][0], modulus)
    # longest exponents first: window w then touches only a prefix of the terms
    terms.sort(key=lambda t: t[0].bit_length(), reverse=True)
    lengths = [e.bit_length() for e, _ in terms]
    c = window or choose_window([e for e, _ in terms])
    mask = (1 << c) - 1
    nwin = -(-lengths[0] // c)
    reach = [0] * nwin  # reach[w]: how many terms have a digit in window w
    for w in range(nwin):
        lo, hi = 0, len(lengths)
        while lo < hi:
            mid = (lo + hi) // 2
            if lengths[mid] > w * c:
                lo = mid + 1
            else:
                hi = mid
        reach[w] = lo
    residue_windows = -(-residue_bits // c)
    acc = ONE
    shift_pow = 1 << c
    for w in range(nwin - 1, -1, -1):
        if acc != ONE:
            acc = gmpy2.powmod(acc, shift_pow, modulus)
        buckets: list[mpz | None] = [None] * (mask + 1)
        shift = w * c
        for e, b in terms[: reach[w]]:
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % modulus
        check = w < residue_windows
        if check and not _residues_hold(buckets, c, modulus):
            return None
        low_mask = (1 << (c // 2)) - 1
        grouped = check and c >= GROUPED_MIN_WINDOW
        # sum_d d * bucket[d] (multiplicatively) with a running product from the top digit down
        running: mpz | None = None
        total: mpz | None = None
        for d in range(mask, 0, -1):
            bd = buckets[d]
            if bd is not None:
                running = bd if running is None else running * bd % modulus
            if running is not None:
                # the buckets sharing a digit's high half, as quotients of these (_residues_hold)
                if grouped and (d == 1 or d & low_mask == 0) and gmpy2.jacobi(running, modulus) != 1:
                    return None
                total = running if total is None else total * running % modulus
        if total is not None:
            acc = acc * total % modulus
    return acc


def _residues_hold(buckets: Sequence[mpz | None], c: int, modulus: int) -> bool:
    """The buckets' residue check before their combination: one symbol per bucket below
    ``GROUPED_MIN_WINDOW`` bits, else one per group of buckets sharing the digit's low half (the groups
    sharing its high half are checked on the running product, in ``_pippenger_python``)."""
    if c < GROUPED_MIN_WINDOW:
        return all(bd is None or gmpy2.jacobi(bd, modulus) == 1 for bd in buckets)
    low_mask = (1 << (c // 2)) - 1
    groups: list[mpz | None] = [None] * (low_mask + 1)
    for d, bd in enumerate(buckets):
        if d and bd is not None:
            cur = groups[d & low_mask]
            groups[d & low_mask] = bd if cur is None else cur * bd % modulus
    return all(x is None or gmpy2.jacobi(x, modulus) == 1 for x in groups)


def product_of_powers(bases: Sequence[mpz], exponents: Sequence[int]) -> mpz:
    """prod b^e mod p: plain powmods for a handful of terms (a quorum), multi-exponentiation beyond."""
    if len(bases) >= 8:
        return multiexp(bases, exponents)
    acc = ONE
    for b, e in zip(bases, exponents, strict=True):
        acc = acc * gmpy2.powmod(b, e, P) % P
    return acc
