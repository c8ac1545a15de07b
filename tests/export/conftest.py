"""The export tests need executorch and onnxruntime; the shared bundles (tests/conftest.py) are
written once per session and copied where a test damages it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("executorch", reason="needs the export extra: pip install 'ponder[export]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ponder[onnx]'")


@pytest.fixture
def ztw_copy(ztw_bundle, tmp_path) -> Path:
    """A private copy of the ZTW bundle that a test may damage."""
    return Path(shutil.copytree(ztw_bundle, tmp_path / "bundle"))
