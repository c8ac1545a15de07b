"""The package layout: every subpackage is packaged, and the layers import only what they may
(docs/architecture.md). Imports are read with `ast`, so a lazy import inside a function counts."""

from __future__ import annotations

import ast
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
FOLDERS = {folder: name for name, folder in PROJECT["package-dir"].items()}  # sdk -> ponder


def _module(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    parts = path.relative_to(ROOT / folder).with_suffix("").parts
    name = ".".join((FOLDERS[folder], *parts))
    return name.removesuffix(".__init__")


def _sources() -> list[Path]:
    return [p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")]


def _imports(path: Path) -> set[str]:
    """Every ponder module `path` imports, anywhere in the file (relative imports resolved)."""
    module, found = _module(path), set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.add(f"{base}.{node.module}" if node.module else base)
            else:
                found.add(node.module or "")
    return {name for name in found if name == "ponder" or name.startswith("ponder.")}


def test_every_subpackage_is_packaged():
    packages = set(PROJECT["packages"])
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            assert _module(init) in packages, f"{init.parent} is missing from pyproject.toml"


def _names(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every `from ponder... import name` in `path`."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{source}" if source else base
            if source == "ponder" or source.startswith("ponder."):
                found.extend((source, alias.name) for alias in node.names)
    return found


def _feature(module: str) -> str:
    """The feature package a module belongs to: its path up to the first private part."""
    parts = module.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_"):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:2])


def test_core_is_a_torch_free_leaf():
    for path in (ROOT / "sdk" / "_core").rglob("*.py"):
        imported = _imports(path)
        assert all(m.startswith("ponder._core") for m in imported), f"{path}: {sorted(imported)}"
        tree = ast.parse(path.read_text())
        heavy = {"torch", "executorch", "onnxruntime", "triton"}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            assert not {n.split(".")[0] for n in names} & heavy, f"{path} imports {names}"


# The torch-free runtime and the kernels reach into the sdk only for `_core` and the version.
# The eager torch backend also runs the export's stage plan.
EAGER_BACKEND = {"ponder.runtime._backends.eager": {"ponder.export._stages.plan"}}


def test_runtime_and_kernels_import_only_the_core_of_the_sdk():
    for path in _sources():
        module = _module(path)
        if not module.startswith(("ponder.runtime", "ponder.kernels")):
            continue
        own = "ponder.runtime" if module.startswith("ponder.runtime") else "ponder.kernels"
        outside = {
            m
            for m in _imports(path)
            if not m.startswith((own, "ponder._core"))
            and m != "ponder"
            and m not in EAGER_BACKEND.get(module, set())
        }
        assert not outside, f"{module} imports {sorted(outside)}"


def test_no_private_name_is_imported_across_packages():
    crossings = []
    for path in _sources():
        module = _module(path)
        for source, name in _names(path):
            private = name.startswith("_") and not name.startswith("__")
            if private and _feature(source) != _feature(module):
                crossings.append(f"{module}: from {source} import {name}")
    assert not crossings, "\n".join(crossings)


def test_only_the_command_line_imports_the_benchmarks_and_nothing_imports_the_command_line():
    for path in _sources():
        module = _module(path)
        imported = _imports(path)
        if not module.startswith("ponder._cli"):
            assert not any(m.startswith("ponder._cli") for m in imported), module
            if not module.startswith("ponder._bench"):
                assert not any(m.startswith("ponder._bench") for m in imported), module


def test_the_sdk_top_level_holds_only_the_public_api():
    modules = {p.name for p in (ROOT / "sdk").glob("*.py")}
    assert modules == {"__init__.py"}
    public = {p.name for p in (ROOT / "sdk").iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert public - {"__pycache__"} == {"data", "models"}
