"""The policy package's modules import each other in one direction (no cycle: Decision needs
nothing from Policy), read with `ast` so that lazy and type-checking imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

POLICY = Path(__file__).resolve().parents[3] / "runtime" / "_policy"
PACKAGE = "ponder.runtime._policy"


def _edges() -> dict[str, set[str]]:
    edges = {}
    for path in POLICY.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
                found.add(node.module.removeprefix(PACKAGE + "."))
        edges[path.stem] = found
    return edges


def test_the_policy_modules_import_without_a_cycle():
    edges, done, path = _edges(), set(), []

    def visit(module: str) -> None:
        assert module not in path, f"import cycle: {' -> '.join([*path, module])}"
        if module in done:
            return
        path.append(module)
        for other in edges.get(module, ()):
            visit(other)
        path.pop()
        done.add(module)

    for module in edges:
        visit(module)
    assert "policy" not in edges["decision"]


def test_decision_reads_no_private_field_of_another_object():
    tree = ast.parse((POLICY / "decision.py").read_text())
    private = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    assert not private, private
