"""Fixtures shared by the interop tests: an election made end to end by the reference package.

``reference_election`` (session scope) runs ``tests/oracle_scripts/make_election.py`` under the
reference's Python 3.10 once and returns a ``ReferenceElection``:

- ``.record_dir``: the published record (``election_record/``: manifest.json, context.json,
  constants.json, coefficients.json, encrypted_tally.json, tally.json, guardians/, submitted_ballots/,
  spoiled_ballots/, encryption_devices/)
- ``.private_dir``: ``election_private_data/`` (private_guardians/, plaintext_ballots/, ciphertext_ballots/)
- ``.summary``: the script's JSON summary: ``tally`` {contest: {selection: count}} as the reference
  decrypted it, ``expected_tally`` (from the plaintext ballots), ``cast_ballot_ids``,
  ``spoiled_ballot_ids``, ``available_guardian_ids``, ``missing_guardian_ids``,
  ``number_of_guardians``, ``quorum``, ``manifest_hash``, ``encryption_device_hash``.

The default election: the reference's fake manifest (2 contests, 5 selections), 5 guardians with
quorum 3, 6 ballots (the 4th spoiled), guardians 4 and 5 missing at decryption. It is cached in
``$AMARVOTE_ORACLE_CACHE`` (default ``~/.cache/amarvote/elections``; under CI a fresh folder of the
session, see ``tests/oracle.py``) under a key made of the script's hash and its arguments, so it is
made once (about 15 s) and reused; treat it as read-only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.oracle import SCRIPTS, oracle_home, require_oracle, run_oracle, under_ci


def _cache() -> Path:
    if not under_ci() and os.environ.get("AMARVOTE_ORACLE_CACHE"):
        return Path(os.environ["AMARVOTE_ORACLE_CACHE"])
    return oracle_home() / "elections"


DEFAULT_ARGS: tuple[str, ...] = ("--guardians", "5", "--quorum", "3", "--missing", "2", "--ballots", "6")


@dataclass(frozen=True)
class ReferenceElection:
    root: Path
    record_dir: Path
    private_dir: Path
    summary: dict[str, Any]


def make_reference_election(*args: str) -> ReferenceElection:
    """Run make_election.py with ``args`` (cached by script hash and args); needs the oracle."""
    script = (SCRIPTS / "make_election.py").read_bytes()
    key = hashlib.sha256(script + "\0".join(args).encode()).hexdigest()[:16]
    cache = _cache()
    root = cache / key
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent sessions (xdist) make it once
        if not (root / "summary.json").exists():
            tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f"{key}-tmp-"))
            try:
                summary = run_oracle("make_election.py", tmp, *args)
                (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
                if root.exists():
                    shutil.rmtree(root)
                tmp.rename(root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    summary = json.loads((root / "summary.json").read_text())
    return ReferenceElection(root, root / "election_record", root / "election_private_data", summary)


@pytest.fixture(scope="session")
def reference_election() -> ReferenceElection:
    require_oracle()
    return make_reference_election(*DEFAULT_ARGS)
