"""The batched checks' random weights (compute.weights)."""

from __future__ import annotations

import os

from compute.weights import WEIGHT_BITS, weight, weights


def test_weights_are_64_bit_and_never_repeat():
    drawn = weights(3000)  # across several refills of the pool
    assert len(set(drawn)) == len(drawn)
    assert all(0 <= w < 1 << WEIGHT_BITS for w in drawn)
    assert max(drawn).bit_length() == WEIGHT_BITS


def test_a_forked_child_draws_its_own_weights():
    weight()  # the pool holds weights now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: without the fork hook it would hand out the parent's next weight
        os.write(write, weight().to_bytes(8, "little"))
        os._exit(0)
    os.waitpid(pid, 0)
    assert int.from_bytes(os.read(read, 8), "little") != weight()
