"""Put a benchmark's result table into benchmarks/README.md, so the README shows the last run's figures.

A section of the README between ``<!-- results/NAME.md -->`` and ``<!-- end results/NAME.md -->`` is
replaced by the file ``results/NAME.md`` the benchmark just wrote (its images' paths made relative to the
README). The prose around the markers (what the figures mean) stays as written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"


def publish(result: Path, readme: Path = README) -> bool:
    """Copy ``result`` (a file under benchmarks/results/) into its section of ``readme``; False (and a
    message) when the README has no section for it."""
    name = f"results/{result.name}"
    start, end = f"<!-- {name} -->", f"<!-- end {name} -->"
    text = readme.read_text()
    if start not in text or end not in text:
        print(f"{readme.name} has no section for {name} (markers {start} ... {end})", file=sys.stderr)
        return False
    body = re.sub(r"\]\((?!https?:|results/)([^)]+)\)", r"](results/\1)", result.read_text().strip())
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{body}\n{end}{tail}")
    return True
