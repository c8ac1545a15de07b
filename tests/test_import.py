"""`import ponder` stays cheap: no torch, executorch, onnxruntime or triton until needed."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "executorch", "onnxruntime", "triton", "matplotlib", "sklearn")


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_ponder_pulls_in_nothing_heavy():
    loaded = _imported_after("import ponder; ponder.__version__; ponder.ConfigError")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_conversion_does_not_pull_in_export_or_kernel_backends():
    loaded = _imported_after("import ponder; ponder.EarlyExitConfig; ponder.convert_")
    assert "torch" in loaded
    # torch's FLOP counter imports triton itself where triton is installed; ponder must not
    by_torch = _imported_after("import torch.utils.flop_counter")
    assert not (loaded - by_torch) & {"executorch", "onnxruntime", "triton"}
    assert "ponder.kernels._triton" not in loaded


def test_lazy_attributes_resolve_and_unknown_names_fail():
    import ponder

    for name in ponder.__all__:
        assert getattr(ponder, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ponder.nope  # noqa: B018
