"""The native extension (compute/_multiexp.c: the multi-exponentiation and the fixed-base tables) under
valgrind's memcheck, in one run: valgrind runs Python about 30 times slower, and the interpreter's own
start-up is most of a run's cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute import multiexp
from tests.compute.memcheck import memcheck_reports

# Under valgrind: a small batch through each path (twisted and converted bases, padded and reduced bases,
# one term, errors). Python's own start-up draws memcheck reports (no suppressions for this interpreter),
# so only reports with a frame or an origin in the extension count.
MULTIEXP_SCRIPT = """
import secrets
from gmpy2 import mpz
from compute.constants import P
from compute import multiexp as me
from compute.multiexp import multiexp_python, native
bs = [mpz(secrets.randbelow(int(P))) for _ in range(12)] + [mpz(1), P - 1, P + 3, mpz(-5), mpz(0), mpz(7)]
es = [secrets.randbits(64) for _ in range(12)] + [1, 2**256 - 1, 7, 3, 0, 2**300]
for k, w in ((0, 0), (1, 0), (2, 3), (5, 0), (len(bs), 0), (len(bs), 3)):
    assert native.multiexp(bs[:k], es[:k], P, w, 16) == multiexp_python(bs[:k], es[:k], P, w or None)
for k, w in ((1, 0), (len(bs), 0), (len(bs), 3), (len(bs), 5)):  # residue buckets (5: by groups)
    for b in (bs[:k], [P - 4, *bs[1:k]]):
        assert native.multiexp(b, es[:k], P, w, 16, 64) == me._pippenger_python(b, es[:k], P, w or None, 64)
for bad in ([*es[:-1], -1], [None] * len(es)):
    try:
        native.multiexp(bs, bad, P, 0, 16)
    except (ValueError, TypeError):
        pass
"""

# Under valgrind: a small table (window 4), every digit and the edges, a non-subgroup base, errors.
FIXEDBASE_SCRIPT = """
import gmpy2
from gmpy2 import mpz
from compute.constants import P
from compute.fixedbase import FixedBaseTable, native
for base in (mpz(3), P - 1, P + 3, mpz(-5), mpz(0)):
    t = FixedBaseTable(base, 4, 18)
    for e in [0, 1, 15, 16, 2**18 - 1, 2**17 + 5, 2**18, -1 if base else 2, *range(2, 300, 37)]:
        assert t.pow(e) == gmpy2.powmod(base, e, P), (base, e)
for bad in ((3, 100, 4, 16), (3, P, 0, 16)):
    try:
        native.fixedbase_table(*bad)
    except ValueError:
        pass
try:
    native.fixedbase_pow(t.native, 2**18)
except ValueError:
    pass
del t
print("done")
"""


# The slow layer, for its length: it needs no service.
@pytest.mark.services
def test_native_extension_is_clean_under_valgrind(tmp_path: Path):
    assert multiexp.native is not None, "compute._multiexp is not built (see test_multiexp_native.py)"
    mine = memcheck_reports(MULTIEXP_SCRIPT + FIXEDBASE_SCRIPT, multiexp.native.__file__, tmp_path)
    assert not mine, "\n\n".join(mine[:3])
