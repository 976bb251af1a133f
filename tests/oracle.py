"""The test oracle: the reference ``electionguard`` 1.4.0 package in its own Python 3.10 venv.

It does not import on Python 3.11+, so scripts under ``tests/oracle_scripts/`` run in a
subprocess with the venv's interpreter. The venv is built once and cached in
``$AMARVOTE_ORACLE_VENV`` (default ``~/.cache/amarvote/egref``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parent / "oracle_scripts"
VENV = Path(os.environ.get("AMARVOTE_ORACLE_VENV", Path.home() / ".cache" / "amarvote" / "egref"))
PACKAGES = ["electionguard==1.4.0", "hypothesis", "dacite==1.6.0"]
HOW_TO_GET = (
    "the interop tests need Python 3.10 (the reference electionguard 1.4.0 does not import on 3.11+): "
    "install it with `pyenv install 3.10.13` or your OS packages, or point AMARVOTE_PYTHON310 at it"
)


class OracleUnavailable(RuntimeError):
    pass


def _find_python310() -> str | None:
    candidates = [os.environ.get("AMARVOTE_PYTHON310"), shutil.which("python3.10")]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    versions = Path(pyenv_root) / "versions"
    if versions.is_dir():
        candidates += [str(p / "bin" / "python3.10") for p in sorted(versions.glob("3.10*"), reverse=True)]
    for c in candidates:
        if c and Path(c).exists():
            return c
    return None


def oracle_python() -> Path:
    """The venv's interpreter, building the venv the first time."""
    py = VENV / "bin" / "python"
    marker = VENV / ".amarvote-ready"
    if marker.exists() and py.exists():
        return py
    base = _find_python310()
    if base is None:
        raise OracleUnavailable(HOW_TO_GET)
    subprocess.run([base, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    marker.write_text("ok\n")
    return py


def run_oracle(script: str, *args: str | Path, timeout: float = 1800) -> Any:
    """Run ``oracle_scripts/<script>`` under the reference; it prints one JSON document on stdout."""
    proc = subprocess.run(
        [str(oracle_python()), str(SCRIPTS / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(SCRIPTS)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"oracle script {script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = proc.stdout.strip().splitlines()
    return json.loads(out[-1]) if out else None


def require_oracle() -> Path:
    """For fixtures: the interpreter, or skip with how to get it; under CI a missing oracle fails."""
    import pytest

    try:
        return oracle_python()
    except OracleUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    raise AssertionError("unreachable")  # pragma: no cover


if __name__ == "__main__":
    print(oracle_python(), file=sys.stderr)
