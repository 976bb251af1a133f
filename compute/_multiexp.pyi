# The native routine of compute/multiexp.py (compute/_multiexp.c).
from collections.abc import Sequence

from gmpy2 import mpz

def multiexp(
    bases: Sequence[int], exponents: Sequence[int], modulus: int, window: int, max_window: int
) -> mpz: ...
def choose_window(bit_lengths: Sequence[int], max_window: int) -> int: ...
