"""The exit watchdog (``tests/exit_watchdog.py``) ends a run that a blocked thread would keep alive."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKED = textwrap.dedent(
    """
    import threading

    def test_leaves_a_thread_blocked():
        threading.Thread(target=threading.Event().wait, name="stuck").start()  # not a daemon
    """
)


def test_a_thread_left_blocked_ends_the_run_with_its_stack(tmp_path: Path) -> None:
    (tmp_path / "test_blocked.py").write_text(BLOCKED)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.exit_watchdog",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_blocked.py"),
        ],
        cwd=ROOT,
        env={**os.environ, "AMARVOTE_TEST_EXIT_WATCHDOG": "2", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "1 passed" in run.stdout
    assert run.returncode != 0
    assert "Timeout" in run.stderr and "threading.py" in run.stderr, run.stderr[-2000:]
