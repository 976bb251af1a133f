"""The docs name only files, functions, classes, tests and settings that exist (issue 20).

Pure text and ``ast`` work over README.md, docs/*.md, service/README.md, deploy/README.md and
benchmarks/README.md; nothing of the project is imported. What is checked, in backticks:

- a repository path (``bridge/relay.py``, ``service/api/``, ``scripts/test.sh``, a bare ``outbox.py``):
  it exists, from the repository's root or the doc's own folder; a bare file name or a path that is only
  the end of one (service/README.md's ``jobs/outbox.py``) exists somewhere in the repository;
- a test, ``tests/x.py::test_y`` and the ``::test_z`` shorthands after it that mean the same file
  (parametrised ids ``[...]`` dropped): a test function of that file;
- a name right after a module path (```service/jobs/outbox.py` `take_due```, or after a colon, and the
  names listed after it with commas): a top-level function, class or assignment of that module, or
  ``Class.method``; a dotted ``compute.verify.verify_guardians``: the same;
- a name in a table row whose first cell is a module (service/README.md's): the module defines it, or it
  is a word of its source, of service/db/models.py (tables, columns) or a Settings field;
- an ``AMARVOTE_*`` variable, anywhere in the text: a field of service/settings.py's ``Settings``, or one
  of the few variables read elsewhere (NOT_SETTINGS, each checked to be read where it says).
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    "README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
    "service/README.md",
    "deploy/README.md",
    "benchmarks/README.md",
]

# AMARVOTE_* variables that are not Settings fields: each is read by the file named (checked below).
NOT_SETTINGS = {
    "AMARVOTE_GUARDIAN_PASSPHRASE": "cli/guardian/folder.py",  # the guardian's own machine, not the service
    "AMARVOTE_GUARDIAN_TOKEN": "cli/guardian/__init__.py",  # typer's envvar= of --token
    "AMARVOTE_FIXEDBASE_WINDOW": "compute/fixedbase.py",  # read at import, below the settings
    "AMARVOTE_ORACLE_VENV": "tests/oracle.py",  # the test suite's reference venv
    "AMARVOTE_PYTHON310": "tests/oracle.py",  # the Python that builds it
    "AMARVOTE_UPDATE_SCREENSHOTS": "tests/bridge/test_web_pages.py",  # the page tests write docs/screenshots
}
# Paths of someone else's repository the docs quote (pika's example).
ELSEWHERE = {"examples/basic_consumer_threaded.py"}
# The election record's layout (inside a record zip or folder), not files of this repository.
RECORD_LAYOUT = ("election_record/", "election_private_data/", "submitted_ballots/", "spoiled_ballots/")

SKIPPED_DIRS = {".git", ".venv", "__pycache__", "node_modules", ".pytest_cache", ".ruff_cache"}
SOURCE = set("py sh md yml yaml toml ini".split())
EXTENSIONS = set("py md yml yaml json sh toml ini cfg txt css js html sql".split())
PATH = re.compile(r"\.{0,2}[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)*/?")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
DOTTED = re.compile(r"(compute|service|bridge|cli)(\.[A-Za-z_][A-Za-z0-9_]*)+")
SPAN = re.compile(r"`([^`]+)`")
FENCE = re.compile(r"^```.*?^```[^\n]*$", re.M | re.S)
SETTING = re.compile(r"\bAMARVOTE_[A-Z0-9_]*[A-Z0-9]")


@dataclass
class Span:
    doc: str
    line: int
    start: int
    end: int
    text: str


@cache
def repo_files() -> tuple[frozenset[str], frozenset[str]]:
    """Every file and folder of the work tree, as posix paths from the root."""
    files: set[str] = set()
    dirs: set[str] = set()
    for here, subdirs, names in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS]
        rel = Path(here).relative_to(ROOT).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs.update(prefix + d for d in subdirs)
        files.update(prefix + n for n in names)
    return frozenset(files), frozenset(dirs)


def resolve(path: str, doc: str) -> list[str]:
    """The repository paths ``path`` can mean in ``doc``: from the root, from the doc's folder, else any
    path ending with it."""
    files, dirs = repo_files()
    want_dir = path.endswith("/")
    bare = path.rstrip("/").removeprefix("./")
    pool = dirs if want_dir else files | dirs
    here = Path(doc).parent.as_posix()
    for candidate in (bare, f"{here}/{bare}" if here != "." else bare):
        normal = os.path.normpath(candidate)
        if normal in pool:
            return [normal]
    return sorted(p for p in pool if p.endswith("/" + bare))


@cache
def tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), filename=path)


@cache
def defined_names(path: str) -> frozenset[str]:
    """Top-level functions, classes and assigned names, and ``Class.member`` for every class member."""
    names: set[str] = set()

    def targets(node: ast.stmt) -> list[str]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return [node.name]
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        return []

    for node in tree(path).body:
        names.update(targets(node))
        if isinstance(node, ast.ClassDef):
            names.update(f"{node.name}.{member}" for child in node.body for member in targets(child))
    return frozenset(names)


def functions_of_tests(path: str) -> frozenset[str]:
    """``test_x`` and ``TestClass::test_x`` of a test file."""
    names = set()
    for node in tree(path).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(
                f"{node.name}::{child.name}"
                for child in node.body
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            )
    return frozenset(names)


def spans(doc: str) -> list[Span]:
    text = (ROOT / doc).read_text()
    # Fenced blocks are blanked (their lines kept) so that their backticks pair with nothing.
    text = FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
    return [
        Span(doc, text.count("\n", 0, m.start()) + 1, m.start(), m.end(), " ".join(m.group(1).split()))
        for m in SPAN.finditer(text)
    ]


def path_tokens(span: str) -> list[tuple[str, str]]:
    """The paths of this repository a backticked phrase names, each with the test it names (``::x``)."""
    found = []
    for word in span.split():
        path, _, test = word.split("#")[0].partition("::")
        if path in ELSEWHERE or path.startswith(RECORD_LAYOUT) or path.startswith(("./amarvote-", "...")):
            continue
        if not PATH.fullmatch(path) or path in {".", ".."}:
            continue
        extension = path.rsplit(".", 1)[-1] if "." in path.lstrip(".") else ""
        # A bare name is a file of ours only if it is source or docs (``guardian.json``,
        # ``passphrase.txt`` are files the programs write).
        folder_or_file = extension in EXTENSIONS or "." not in path.rsplit("/", 1)[-1]
        if ("/" in path and folder_or_file) or extension in SOURCE:
            found.append((path, test))
    return found


def names_in(module: list[str]) -> frozenset[str]:
    """What a name right after a module may be: a top-level name, ``Class.member`` or a bare member."""
    names: set[str] = set()
    for path in module:
        names |= defined_names(path)
    return frozenset(names | {n.split(".", 1)[1] for n in names if "." in n})


def check_doc(doc: str, problems: list[str], counts: dict[str, int]) -> None:
    raw = (ROOT / doc).read_text()
    test_file: str | None = None  # the last test file named, which ``::test_x`` shorthands mean
    module: list[str] | None = None  # the module a name after it belongs to
    listing = False  # after ```path`: ``: the names separated by commas are all of it
    previous_end = 0
    for span in spans(doc):
        where = f"{doc}:{span.line}: `{span.text}`"
        gap = raw[previous_end : span.start]
        previous_end = span.end
        paths = path_tokens(span.text)
        name = re.sub(r"\(.*\)$", "", span.text)  # `load_election(lock=True)`
        if module and not paths and NAME.fullmatch(name):
            first = re.fullmatch(r"\s*:?\s*", gap) and not listing
            if first or (listing and re.fullmatch(r"\s*,\s*", gap)):
                counts["names"] += 1
                if name not in names_in(module):
                    problems.append(f"{where}: no {name} in {' or '.join(module)}")
                listing = listing or ":" in gap
                if listing:
                    continue
        module, listing = None, False

        if DOTTED.fullmatch(span.text):
            counts["names"] += 1
            if problem := check_dotted(span.text):
                problems.append(f"{where}: {problem}")
            continue

        if span.text.startswith("::"):
            if test_file is None:
                problems.append(f"{where}: a test with no file before it")
            else:
                check_test(test_file, span.text.split()[0][2:], where, problems, counts)
            continue

        for path, test in paths:
            counts["paths"] += 1
            found = resolve(path, doc)
            if not found:
                problems.append(f"{where}: no such file or folder {path}")
                continue
            if Path(path).name.startswith("test_") and path.endswith(".py"):
                test_file = found[0]
            if test:
                check_test(found[0], test, where, problems, counts)
            modules = [f for f in found if f.endswith(".py")]
            if path.startswith(("benchmarks/", "scripts/", "bench_", "python")) or not modules:
                break  # scripts take subcommands and arguments after their name, not names
            rest = span.text.split(path, 1)[1].split()
            if rest and NAME.fullmatch(candidate := re.sub(r"\(.*\)$", "", rest[0])):
                counts["names"] += 1  # "`fixedbase.py pow`": the name in the same phrase
                if candidate not in names_in(modules):
                    problems.append(f"{where}: no {candidate} in {' or '.join(modules)}")
            elif span.text == path:
                module = modules

    for line_no, line in enumerate(raw.splitlines(), 1):
        check_table_row(doc, line_no, line, problems, counts)
        for match in SETTING.finditer(line):
            setting = match.group()
            if setting.startswith("AMARVOTE_TEST_"):
                continue
            counts["settings"] += 1
            if (
                setting not in NOT_SETTINGS
                and setting.removeprefix("AMARVOTE_").lower() not in settings_fields()
            ):
                problems.append(f"{doc}:{line_no}: {setting} is no field of service/settings.py's Settings")


def check_table_row(doc: str, line_no: int, line: str, problems: list[str], counts: dict[str, int]) -> None:
    """A table row whose first cell is a module (service/README.md): the names in the row are the module's.
    Rows also name the tables, columns and settings the module works on, so a name passes if the module
    defines it, or its source, service/db/models.py or Settings has it as a word."""
    row = re.fullmatch(r"\|\s*`([^`]+)`\s*\|(.*)", line)
    if not row or not (paths := path_tokens(row.group(1))) or paths[0][0].startswith("bench"):
        return
    modules = [f for f in resolve(paths[0][0], doc) if f.endswith(".py")]
    if not modules:
        return
    source = " ".join((ROOT / m).read_text() for m in [*modules, "service/db/models.py"])
    for text in SPAN.findall(row.group(2)):
        name = re.sub(r"\(.*\)$", "", text)
        if path_tokens(text) or not NAME.fullmatch(name):
            continue
        counts["names"] += 1
        last = name.rsplit(".", 1)[-1]
        if name in names_in(modules) or last in settings_fields() or re.search(rf"\b{last}\b", source):
            continue
        problems.append(f"{doc}:{line_no}: `{text}`: not in {' or '.join(modules)}")


def check_dotted(dotted: str) -> str | None:
    """``compute.verify.verify_guardians``: the longest module prefix, then a name in it."""
    parts = dotted.split(".")
    files, dirs = repo_files()
    for cut in range(len(parts), 0, -1):
        base = "/".join(parts[:cut])
        module = f"{base}.py" if f"{base}.py" in files else f"{base}/__init__.py"
        if module in files or base in dirs:
            rest = ".".join(parts[cut:])
            if not rest or (module in files and rest in defined_names(module)):
                return None
            return f"no {rest} in {module if module in files else base}"
    return f"no module {dotted}"


def check_test(path: str, test: str, where: str, problems: list[str], counts: dict[str, int]) -> None:
    counts["tests"] += 1
    test = re.sub(r"\[.*\]$", "", test)
    if test not in functions_of_tests(path):
        problems.append(f"{where}: no test {test} in {path}")


@cache
def settings_fields() -> frozenset[str]:
    for node in tree("service/settings.py").body:
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            return frozenset(
                child.target.id
                for child in node.body
                if isinstance(child, ast.AnnAssign) and isinstance(child.target, ast.Name)
            )
    raise AssertionError("no class Settings in service/settings.py")


def test_every_reference_in_the_docs_exists() -> None:
    """Fix the doc, not this test: rename what was renamed, drop what is gone, keep the sentence true."""
    problems: list[str] = []
    counts = {"paths": 0, "tests": 0, "names": 0, "settings": 0}
    for doc in DOCS:
        check_doc(doc, problems, counts)
    assert not problems, f"{len(problems)} references to nothing:\n" + "\n".join(problems)
    # What the checks found to check (628 paths, 183 tests, 292 names, 106 settings when written): a
    # parser that stopped finding references would pass on nothing.
    assert (
        counts["paths"] > 500 and counts["tests"] > 150 and counts["names"] > 200 and counts["settings"] > 80
    ), counts


def test_the_variables_that_are_not_settings_are_read_where_they_say() -> None:
    for variable, reader in NOT_SETTINGS.items():
        assert variable not in {f"AMARVOTE_{f.upper()}" for f in settings_fields()}, (
            f"{variable} is a setting now"
        )
        assert variable in (ROOT / reader).read_text(), f"{reader} no longer reads {variable}"
