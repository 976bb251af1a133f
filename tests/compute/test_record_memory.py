"""The verifier's memory is bounded by a batch, not by the election: verifying a record of 4N ballots
peaks (tracemalloc, within this one run) less than 1.5 times as high as a record of N.

What still grows with the ballots is small beside a batch: one id string per ballot and 8 bytes per
selection ciphertext (the clone check). A verifier that loads every ballot (``read_record`` +
``verify_record``) peaked twice as high at 4N (12.5 MiB at 500 ballots, 26.9 MiB at 2,000) and fails
this test; the streaming one, 1.77 and 2.01 MiB.
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

from compute.record import open_record
from compute.verify import verify_source
from tests.compute.record_helpers import ballots, keys, write

N = 400
BATCH = 50


def _peak_of_verify(path: Path) -> tuple[int, list[str]]:
    gc.collect()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    with open_record(path) as source:
        outcome = verify_source(source, batch=BATCH, workers=1)
    _, peak = tracemalloc.get_traced_memory()
    return peak - base, outcome.problems


def test_verify_peak_memory_does_not_grow_with_the_ballots(tmp_path: Path) -> None:
    k = keys()
    submitted = ballots(k, 4 * N, spoil_every=200)
    small = write(k, submitted[:N], tmp_path / "small" / "election_record", missing=0)
    large = write(k, submitted, tmp_path / "large" / "election_record", missing=0)
    del submitted
    tracemalloc.start()
    try:
        peak_small, problems_small = _peak_of_verify(small)
        peak_large, problems_large = _peak_of_verify(large)
    finally:
        tracemalloc.stop()
    assert problems_small == [] and problems_large == []
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)
