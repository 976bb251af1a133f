"""The oracle's Python 3.10 is found by running candidates, not by their existence (pyenv's shim)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests import oracle


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    oracle.find_python310.cache_clear()
    monkeypatch.delenv("AMARVOTE_PYTHON310", raising=False)
    yield
    oracle.find_python310.cache_clear()


def test_a_shim_that_exits_127_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As on these machines: pyenv's shim for python3.10 is on PATH but 3.10 is not the active version.
    shims = tmp_path / "shims"
    _script(shims / "python3.10", "echo 'pyenv: python3.10: command not found' >&2; exit 127")
    real = _script(tmp_path / "root" / "versions" / "3.10.13" / "bin" / "python3.10", "echo Python 3.10.13")
    monkeypatch.setenv("PATH", f"{shims}:/usr/bin:/bin")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "root"))
    assert oracle.find_python310() == (str(real), "Python 3.10.13")


def test_the_setting_comes_first_but_only_if_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _script(tmp_path / "mine" / "python", "echo Python 3.10.9")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "none"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("AMARVOTE_PYTHON310", str(chosen))
    assert oracle.find_python310() == (str(chosen), "Python 3.10.9")

    oracle.find_python310.cache_clear()
    _script(chosen, "echo Python 3.11.7")  # not a 3.10: refused, and nothing else is there
    assert oracle.find_python310() is None
    assert "pyenv install 3.10.13" in oracle.describe()
