"""compute/'s import graph: acyclic, nothing beyond the standard library and gmpy2 (it runs on bare Ray
workers), and every name imported from a compute module is defined there (one way to import each thing).

Read from the source with ``ast`` rather than by importing, so late (function-level) imports count too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPUTE = ROOT / "compute"
IMPORTERS = ("compute", "service", "bridge", "tests", "benchmarks")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) for every import statement anywhere in the tree; names is empty for ``import m``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
    return found


def _compute_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(COMPUTE.glob("*.py")):
        deps = {m for m, _ in _imports(_tree(path)) if m.startswith("compute.")}
        graph[_module_name(path)] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return [*path[path.index(d) :], d]
            if d not in state and (found := visit(d)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_compute_has_no_import_cycle() -> None:
    graph = _compute_graph()
    assert "compute.constants" in graph and graph["compute.constants"] == set()
    assert _cycle(graph) is None


def test_compute_imports_only_stdlib_gmpy2_and_itself() -> None:
    # dateutil: manifest's late fallback for dates fromisoformat rejects, as the reference parses them
    allowed = set(sys.stdlib_module_names) | {"gmpy2", "compute", "dateutil"}
    # sealing: the passphrase format (argon2id, AES-GCM), pure but for these two; decryption tasks import it
    # (through the escrow) but never run argon2: escrow is opened with HKDF
    also = {"sealing.py": {"argon2", "cryptography"}}
    outside = {
        (path.name, m)
        for path in COMPUTE.glob("*.py")
        for m, _ in _imports(_tree(path))
        if m.split(".")[0] not in allowed | also.get(path.name, set())
    }
    assert outside == set()


def _defined_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_names_are_imported_from_the_module_that_defines_them() -> None:
    defined = {_module_name(p): _defined_names(_tree(p)) for p in COMPUTE.glob("*.py")}
    borrowed = []
    for top in IMPORTERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "oracle_scripts" in path.parts:  # run by the reference's Python 3.10, not against compute/
                continue
            for module, names in _imports(_tree(path)):
                if module in defined:
                    borrowed += [
                        f"{path.relative_to(ROOT)}: {module}.{n}" for n in names if n not in defined[module]
                    ]
                elif module.startswith("compute."):
                    borrowed.append(f"{path.relative_to(ROOT)}: no module {module}")
    assert borrowed == []
