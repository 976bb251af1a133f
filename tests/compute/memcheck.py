"""Run a Python snippet under valgrind's memcheck and keep the reports that name the native extension."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def memcheck_reports(script: str, extension_file: str, tmp_path: Path) -> list[str]:
    """The memcheck reports (XML) of ``script`` that name ``extension_file`` or ``_multiexp.c``; Python's
    own start-up reports are not ours. The script must print "done" at its end."""
    valgrind = shutil.which("valgrind")
    assert valgrind, "valgrind is missing: scripts/services.sh installs it (apt-get install valgrind)"
    xml = tmp_path / "memcheck.xml"
    proc = subprocess.run(
        [
            valgrind,
            "--tool=memcheck",
            "--leak-check=full",
            "--track-origins=yes",
            "--xml=yes",
            f"--xml-file={xml}",
            sys.executable,
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONMALLOC": "malloc"},
    )
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr[-3000:]
    ours = Path(extension_file).name
    return [
        ET.tostring(e, encoding="unicode")
        for e in ET.parse(xml).getroot().findall("error")
        if any(ours in (t.text or "") or "_multiexp.c" in (t.text or "") for t in e.iter())
    ]
