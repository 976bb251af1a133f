"""Run the ``amarvote`` command as a user would: a subprocess with its own, clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The embedded demos' election: 12 ballots in chunks of 5, every 4th spoiled (3 spoiled, 9 cast).
DEMO_12 = ("--ballots", "12", "--chunk-size", "5", "--spoil-every", "4")


def amarvote(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AMARVOTE_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd,
        # No dashboard for a local Ray: about 3 s of CPU a start that no test looks at.
        env={
            **clean,
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "200",
            "AMARVOTE_RAY_DASHBOARD": "false",
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )
