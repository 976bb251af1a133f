"""The random weights of the batched checks: independent, uniform, 64-bit, and unknown to whoever made
what is checked (``os.urandom``, what ``secrets`` draws from).

Drawn 512 at a time and handed out one by one: one system call and one ``struct`` conversion for the lot,
where ``secrets.randbits`` costs a call each (1.6 us: 2% of a tally task's CPU, at 5 weights a selection).
The pool lives in this process only (emptied in a forked child) and a weight is never handed out twice.
"""

from __future__ import annotations

import os
import struct

WEIGHT_BITS = 64
_DRAW = 512
_UNPACK = struct.Struct(f"<{_DRAW}Q").unpack
_pool: list[int] = []


def weight() -> int:
    """One uniform 64-bit weight."""
    while True:
        try:
            return _pool.pop()  # atomic under the GIL: threads (compute.parallel) never share a weight
        except IndexError:
            _pool.extend(_UNPACK(os.urandom(8 * _DRAW)))


def weights(n: int) -> list[int]:
    """``n`` uniform 64-bit weights."""
    return [weight() for _ in range(n)]


os.register_at_fork(after_in_child=_pool.clear)
