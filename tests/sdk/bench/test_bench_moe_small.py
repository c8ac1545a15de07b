"""D2DMoE on the small MNIST-1D classifier: the model's FFNs are found, and one tiny end-to-end
run gives dense accuracy at τ=0 and fewer experts as τ grows."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from ponder._bench.moe_small import ResidualMLPClassifier, run_small_moe
from ponder._moe.ffn import find_ffns

needs_mnist1d = pytest.mark.skipif(
    importlib.util.find_spec("mnist1d") is None,
    reason="needs mnist1d (pip install 'ponder[train]')",
)


def test_find_ffns_finds_exactly_the_block_mlps():
    specs = find_ffns(ResidualMLPClassifier(depth=3))
    assert [(s.path, s.kind, s.activation) for s in specs] == [
        (f"blocks.{i}.mlp", "sequential", "relu") for i in range(3)
    ]


def test_classifier_shapes():
    model = ResidualMLPClassifier(hidden=32, depth=2)
    assert model(torch.randn(5, 1, 40)).shape == (5, 10)


@needs_mnist1d
def test_run_small_moe_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path / "cache"))
    lines: list[str] = []
    out = tmp_path / "small.json"
    result = run_small_moe(
        out,
        samples=600,
        expert_size=8,
        taus=(0.0, 0.3, 0.8),
        router_epochs=1,
        progress=False,
        echo=lines.append,
        epochs=2,
        hidden=64,
    )
    assert set(result) >= {"dense", "curves", "best_within_1pp", "equal_flops", "experts"}
    assert result["experts"] == 8
    dyn, top = result["curves"]["dynamic_k"], result["curves"]["top_k"]
    assert [r["tau"] for r in dyn] == [0.0, 0.3, 0.8]
    assert top[-1]["k"] == 8 and top[-1]["flops_fraction"] == 1.0
    for row in dyn + top:
        assert 0.0 < row["flops_fraction"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
        assert len(row["per_layer_flops_fraction"]) == 3
    # τ=0 keeps every expert, which reproduces the dense FFNs: same FLOPs, same accuracy
    assert dyn[0]["flops_fraction"] == 1.0
    assert dyn[0]["accuracy"] == result["dense"]["test_acc"] and dyn[0]["drop_pp"] == 0
    fractions = [r["flops_fraction"] for r in dyn]
    assert fractions == sorted(fractions, reverse=True) and fractions[-1] < 1.0
    assert result["best_within_1pp"]["dynamic_k"]["flops_fraction"] <= 1.0
    assert [e["flops_fraction"] for e in result["equal_flops"]] == [0.3, 0.5, 0.7]
    text = "\n".join(lines)
    assert "dynamic_k" in text and "lowest FFN FLOPs within 1 pp of dense" in text
    assert json.loads(out.read_text())["curves"]["dynamic_k"][0]["flops_fraction"] == 1.0
