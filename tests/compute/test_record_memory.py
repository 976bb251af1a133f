"""The verifier's memory is bounded by a batch, not by the election: verifying a record of 4N ballots
peaks (tracemalloc, within this one run) less than 1.5 times as high as a record of N.

What still grows with the ballots is small beside a batch: one id string per ballot and 8 bytes per
selection ciphertext (the clone check). With this test's record, a verifier that loads every ballot
(``read_record`` + ``verify_record``) peaked 2.5 times as high at 4N (9.9 MiB at 400 ballots, 24.8 MiB
at 1,600) and fails it; the streaming one about 1.1 times (1.7 and 1.9 MiB).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compute.record_helpers import ballots, keys, write

# No service, but about half a minute of encrypting and verifying 2,000 ballots: the slow layer.
pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
N = 400
BATCH = 50

# Measured in a fresh interpreter: tracemalloc traces every thread, and a session that has started Ray
# (or a pipeline's worker threads) would add their allocations to the peak.
MEASURE = """
import gc, json, sys, tracemalloc
from compute.record import open_record
from compute.verify import verify_source

out = []
tracemalloc.start()
for path in sys.argv[2:]:
    gc.collect()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    with open_record(path) as source:
        outcome = verify_source(source, batch=int(sys.argv[1]), workers=1)
    _, peak = tracemalloc.get_traced_memory()
    out.append({"peak": peak - base, "problems": outcome.problems, "ballots": outcome.ballots})
print(json.dumps(out))
"""


def test_verify_peak_memory_does_not_grow_with_the_ballots(tmp_path: Path) -> None:
    k = keys()
    submitted = ballots(k, 4 * N, spoil_every=200)
    small = write(k, submitted[:N], tmp_path / "small" / "election_record", missing=0)
    large = write(k, submitted, tmp_path / "large" / "election_record", missing=0)
    r = subprocess.run(
        [sys.executable, "-c", MEASURE, str(BATCH), str(small), str(large)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    at_n, at_4n = json.loads(r.stdout.strip().splitlines()[-1])
    assert (at_n["ballots"], at_4n["ballots"]) == (N, 4 * N)
    assert at_n["problems"] == [] and at_4n["problems"] == []
    assert at_4n["peak"] < 1.5 * at_n["peak"], (at_n["peak"], at_4n["peak"])
