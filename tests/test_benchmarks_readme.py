"""benchmarks/readme.py: a benchmark's result table replaces its section of the README, prose kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_readme", ROOT / "benchmarks" / "readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_result_replaces_its_section_and_keeps_the_prose(tmp_path: Path) -> None:
    publish = _readme_module().publish
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results/x.md -->\nold table\n<!-- end results/x.md -->\nwhat it means\n")
    result = tmp_path / "x.md"
    result.write_text("| a |\n|---|\n| 1 |\n\n![plot](x.png) [doc](https://e.org/y.png)\n")
    assert publish(result, readme)
    text = readme.read_text()
    assert "old table" not in text and "| 1 |" in text
    assert text.startswith("intro\n") and text.endswith("what it means\n")
    assert "![plot](results/x.png)" in text and "(https://e.org/y.png)" in text
    assert publish(result, readme) and readme.read_text() == text  # the same run twice: the same README


def test_a_readme_without_the_section_is_left_alone(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    result = tmp_path / "x.md"
    result.write_text("| a |\n")
    assert not _readme_module().publish(result, readme)
    assert readme.read_text() == "no markers\n"
