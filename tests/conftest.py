import os
import sys
from pathlib import Path

# No test may reach a model hub; set before any test module imports transformers or
# huggingface_hub (they read it once, at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

sys.path.insert(
    0, str(Path(__file__).parent)
)  # tiny_models.py; ponder itself is the installed package

# Tiny models gain nothing from a second thread, and on a busy machine OpenMP threads spin-wait
# for a core. Measured here (2 cores shared with other processes): the contract suite took 35 s
# on two threads and 0.8 s on one; 10 epochs of head training 8 s against 0.04 s.
torch.set_num_threads(1)


# Bundles shared by the export and runtime tests: lowering to ExecuTorch takes seconds per
# model, so each bundle is written once per session.
def _export_tools():
    pytest.importorskip("executorch", reason="needs the export extra: pip install 'ponder[export]'")
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ponder[onnx]'")
    from ponder.export import export_bundle

    return export_bundle


@pytest.fixture(scope="session")
def ztw_bundle(tmp_path_factory) -> Path:
    """The tiny 2-D CNN with two ZTW exits, as XNNPACK program + ONNX stages."""
    from export_models import ztw_cnn
    from tiny_models import inputs

    out = tmp_path_factory.mktemp("bundles") / "ztw"
    _export_tools()(
        ztw_cnn(), inputs("conv2d", batch=6), out, model_id="ztw-cnn", echo=lambda s: None
    )
    return out


@pytest.fixture(scope="session")
def ztw_onnx_bundle(tmp_path_factory) -> Path:
    """The same tiny ZTW CNN as ONNX stages only: for the `gpu` tests, which run on machines
    with onnxruntime and torch but without executorch."""
    pytest.importorskip("onnxscript", reason="needs the onnx extra: pip install 'ponder[onnx]'")
    from export_models import ztw_cnn
    from tiny_models import inputs

    from ponder.export import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "ztw-onnx"
    x = inputs("conv2d", batch=6)
    export_bundle(ztw_cnn(), x, out, model_id="ztw-cnn", target="onnx", echo=lambda s: None)
    return out


@pytest.fixture(scope="session")
def moe_bundle(tmp_path_factory) -> Path:
    """An MoE MLP (dynamic-k, 4 experts per FFN) with one SDN exit."""
    from export_models import moe_mlp

    out = tmp_path_factory.mktemp("bundles") / "moe"
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    _export_tools()(moe_mlp(), x, out, model_id="moe-mlp", echo=lambda s: None)
    return out
