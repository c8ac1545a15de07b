"""Bundles shared by the export tests: lowering to ExecuTorch takes seconds per model, so each
bundle is written once per session and copied where a test damages it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("executorch", reason="needs the export extra: pip install 'ponder[export]'")
pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ponder[onnx]'")

from export_models import moe_mlp, ztw_cnn
from tiny_models import inputs


@pytest.fixture(scope="session")
def ztw_bundle(tmp_path_factory) -> Path:
    from ponder.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "ztw"
    export_bundle(
        ztw_cnn(), inputs("conv2d", batch=6), out, model_id="ztw-cnn", echo=lambda s: None
    )
    return out


@pytest.fixture(scope="session")
def moe_bundle(tmp_path_factory) -> Path:
    from ponder.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "moe"
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    export_bundle(moe_mlp(), x, out, model_id="moe-mlp", echo=lambda s: None)
    return out


@pytest.fixture
def ztw_copy(ztw_bundle, tmp_path) -> Path:
    """A private copy of the ZTW bundle that a test may damage."""
    return Path(shutil.copytree(ztw_bundle, tmp_path / "bundle"))
