"""The test oracle: the reference ``electionguard`` 1.4.0 package in its own Python 3.10 venv.

It does not import on Python 3.11+, so scripts under ``tests/oracle_scripts/`` run in a
subprocess with the venv's interpreter.

Where the venv lives:

- under CI (``CI`` set, as ``.ci/run`` does) it is built afresh for the test run in a temporary
  folder, so a missing install step fails CI instead of hiding in a cache of an earlier run (pytest-xdist's
  workers share the folder their controller made: ``ORACLE_RUN_DIR`` in the environment);
- elsewhere it is built once and kept in ``$AMARVOTE_ORACLE_VENV`` (default ``~/.cache/amarvote/egref``).

The build holds a file lock beside the venv, so concurrent sessions (xdist's workers) build it once.

Python 3.10 is found by *running* each candidate (``docs/field-notes.md#reference-electionguard``:
pyenv's shim for ``python3.10`` exists on PATH even where 3.10 is not the active version, and then exits
127).
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).parent / "oracle_scripts"
PACKAGES = ["electionguard==1.4.0", "hypothesis", "dacite==1.6.0"]
ORACLE_RUN_DIR = "AMARVOTE_ORACLE_RUN_DIR"  # CI only: this run's temporary folder, for xdist's workers
HOW_TO_GET = (
    "the interop tests need Python 3.10 (the reference electionguard 1.4.0 does not import on 3.11+): "
    "install it with `pyenv install 3.10.13` or your OS packages, or point AMARVOTE_PYTHON310 at it"
)


class OracleUnavailable(RuntimeError):
    pass


def under_ci() -> bool:
    return bool(os.environ.get("CI"))


@functools.cache
def _fresh_dir() -> Path:
    """A temporary folder for this test run's oracle files (CI only), removed at exit by the process that
    made it. It is put in the environment, so the xdist workers a controller starts afterwards (the
    controller calls this in ``pytest_configure``) use the same folder and the venv is built once."""
    inherited = os.environ.get(ORACLE_RUN_DIR)
    if inherited and Path(inherited).is_dir():
        return Path(inherited)
    path = Path(tempfile.mkdtemp(prefix="amarvote-oracle-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[ORACLE_RUN_DIR] = str(path)
    return path


def oracle_home() -> Path:
    """Where the oracle venv and the reference elections are kept."""
    if under_ci():
        return _fresh_dir()
    return Path(os.environ.get("AMARVOTE_ORACLE_HOME", Path.home() / ".cache" / "amarvote"))


def venv_dir() -> Path:
    if not under_ci() and os.environ.get("AMARVOTE_ORACLE_VENV"):
        return Path(os.environ["AMARVOTE_ORACLE_VENV"])
    return oracle_home() / "egref"


def _pyenv_root() -> Path | None:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    try:
        out = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()) if out.stdout.strip() else None


def python310_candidates() -> list[str]:
    """In order: AMARVOTE_PYTHON310, pyenv's installed 3.10s (newest first), python3.10 on PATH."""
    candidates: list[str] = []
    if os.environ.get("AMARVOTE_PYTHON310"):
        candidates.append(os.environ["AMARVOTE_PYTHON310"])
    root = _pyenv_root()
    if root is not None and (root / "versions").is_dir():
        versions = sorted((root / "versions").glob("3.10*"), key=lambda p: p.name, reverse=True)
        candidates += [str(v / "bin" / "python3.10") for v in versions]
    on_path = shutil.which("python3.10")
    if on_path:
        candidates.append(on_path)
    return list(dict.fromkeys(candidates))


def _answers(candidate: str) -> str | None:
    """The version a candidate prints, or None if it does not run as a Python 3.10."""
    try:
        proc = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    version = (proc.stdout or proc.stderr).strip()
    if proc.returncode != 0 or not version.startswith("Python 3.10"):
        return None
    return version


@functools.cache
def find_python310() -> tuple[str, str] | None:
    """(interpreter, its version) of the first candidate that answers, or None."""
    for candidate in python310_candidates():
        version = _answers(candidate)
        if version is not None:
            return candidate, version
    return None


def describe() -> str:
    """One line for the test session's header: which Python 3.10 the oracle uses, and where."""
    found = find_python310()
    if found is None:
        return f"oracle: no Python 3.10 found ({HOW_TO_GET})"
    where = "a fresh venv for this run (CI)" if under_ci() else str(venv_dir())
    return f"oracle: {found[1]} at {found[0]}; electionguard 1.4.0 in {where}"


@functools.cache
def oracle_python() -> Path:
    """The venv's interpreter, building the venv the first time (every session under CI)."""
    venv = venv_dir()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait, then find the venv ready
        return _build_venv(venv)


def _build_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    marker = venv / ".amarvote-ready"
    if marker.exists() and py.exists() and _answers(str(py)):
        return py
    found = find_python310()
    if found is None:
        raise OracleUnavailable(HOW_TO_GET)
    base, version = found
    print(f"building the oracle venv in {venv} with {version} ({base})", file=sys.stderr)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PACKAGES], check=True
    )
    marker.write_text(f"{version}\n")
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
        if under_ci():
            pytest.fail(str(e))
        pytest.skip(str(e))
    raise AssertionError("unreachable")  # pragma: no cover


if __name__ == "__main__":
    print(describe(), file=sys.stderr)
    print(oracle_python())
