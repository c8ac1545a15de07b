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


# Where the torch-free runtime and the kernels may reach into the sdk: the error family, the
# registries, the exit rules and the version. The eager torch backend also needs the model side.
SDK_LEAVES = {"ponder", "ponder._errors", "ponder._registry", "ponder._rules"}
EAGER_BACKEND = {"ponder.runtime._backends.eager": {"ponder.export._stages"}}


def test_runtime_and_kernels_import_only_leaves_of_the_sdk():
    for path in _sources():
        module = _module(path)
        if not module.startswith(("ponder.runtime", "ponder.kernels")):
            continue
        own = "ponder.runtime" if module.startswith("ponder.runtime") else "ponder.kernels"
        allowed = SDK_LEAVES | EAGER_BACKEND.get(module, set())
        outside = {m for m in _imports(path) if not m.startswith(own) and m not in allowed}
        assert not outside, f"{module} imports {sorted(outside)}"


def test_only_the_command_line_imports_the_benchmarks_and_nothing_imports_the_command_line():
    for path in _sources():
        module = _module(path)
        imported = _imports(path)
        if not module.startswith("ponder._cli"):
            assert not any(m.startswith("ponder._cli") for m in imported), module
            if not module.startswith("ponder._bench"):
                assert not any(m.startswith("ponder._bench") for m in imported), module


def test_the_sdk_top_level_holds_no_benchmark_or_command_module():
    names = {p.stem for p in (ROOT / "sdk").glob("*.py")}
    assert not {n for n in names if n.startswith(("_bench", "_cli"))}
