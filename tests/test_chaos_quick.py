"""The chaos harness's short variant (``scripts/chaos.py --quick``), so CI runs it: three small elections
on the real PostgreSQL and RabbitMQ and a two-node Ray started with ``ray start``, the API, bridge, relay
and reconciler as subprocesses, each election under one fault local to the harness (its own processes,
database sessions and vhost connections, or messages on its own vhost), every chunk checked; then one
election whose rows are doctored, which the checks must catch.

Slow (Ray and the service's processes start once, about a minute on a loaded 2-core machine): one test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.services, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parent.parent


def test_quick_chaos_loses_duplicates_and_sticks_nothing(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    doc = json.loads((tmp_path / "chaos.json").read_text())
    totals = doc["totals"]
    assert totals["runs"] == 3, totals
    assert len(totals["faults"]) == 3, "three different faults"
    assert totals["applied"] == 3, [run["applied"] for run in doc["runs"]]
    assert totals["lost"] == totals["duplicated"] == totals["stuck_jobs"] == 0, totals
    assert totals["wrong_counts"] == totals["unexpected_dead_letters"] == 0, totals
    assert totals["chunks"] > 0 and totals["ok"] + totals["failed_as_expected"] == totals["chunks"]
    for run in doc["runs"]:
        # An election that reached its results was checked against the plaintexts.
        assert run["counts_ok"] is (None if run["fault"] == "bad_chunk" else True), run
    assert doc["self_check"]["detected"], doc["self_check"]
    assert (tmp_path / "chaos.md").read_text().count("\n| ") >= 3
