"""`ponder bench export`: the ViT built as a Sequential, the per-stage fractions and goals, and one
tiny configuration end to end (export, interleaved timing, JSON, plot, table)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ponder
from ponder._bench.export_report import add_goals
from ponder._bench.export_time import summarise
from ponder._bench.vit import vit_sequential
from ponder._early_exit.stack import get_stack
from ponder.models.vit import ViTBlock
from ponder.runtime._engine.profile import cpu_features, int8_dot_product

TINY = dict(blocks=2, width=32, heads=2, image=32, patch=8, classes=10)


def test_vit_is_a_sequential_with_blocks_between_embedding_and_head():
    model = vit_sequential(**TINY)
    assert len(model) == 2 + 2
    tokens = model[0](torch.randn(3, 3, 32, 32))
    assert tokens.shape == (3, (32 // 8) ** 2 + 1, 32)  # [B, T, D], class token first
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_vit_s_has_the_vit_s_parameter_count():
    # timm's vit_small_patch16_224 has 22,050,664 parameters
    assert sum(p.numel() for p in vit_sequential().parameters()) == 22_050_664


def test_exits_follow_transformer_blocks():
    model = ponder.convert_(
        vit_sequential(**TINY), ponder.EarlyExitConfig(exits=(1,), style="sdn", pooling="cls")
    )
    spec = get_stack(model).spec
    # child 0 is the patch embedding, so exit index 1 follows transformer block 1
    assert spec["block_paths"][spec["exit_blocks"][0]] == "1"
    assert isinstance(model[1], ViTBlock) and spec["pooling"] == "cls"


def test_fractions_and_goals_from_known_times():
    rounds = 5
    mono = np.full((rounds, 1), 0.100)
    staged = np.tile([0.026, 0.052, 0.103], (rounds, 1))  # [R, S] cumulative seconds
    timing = summarise(
        {"pte": {"staged": staged, "monolithic": mono, "staged_int8": staged / 2}},
        cumulative_flops=[25.0, 50.0, 100.0],
        mono_flops=100.0,
    )
    add_goals(timing)
    result = timing["pte"]
    assert [r["flops_fraction"] for r in result["stages"]] == [0.25, 0.5, 1.0]
    np.testing.assert_allclose([r["time_fraction"] for r in result["stages"]], [0.26, 0.52, 1.03])
    assert [r["goal_met"] for r in result["stages"]] == [True, True, True]
    assert result["all_stages_ratio"] == pytest.approx(1.03)
    assert result["all_stages_goal_met"]
    assert [r["int8_over_fp32"] for r in result["int8"]] == pytest.approx([0.5] * 3)


def test_a_stage_slower_than_its_flops_misses_the_goal():
    timing = summarise(
        {"onnx": {"staged": np.array([[0.04, 0.11]]), "monolithic": np.array([[0.1]])}},
        cumulative_flops=[25.0, 100.0],
        mono_flops=100.0,
    )
    add_goals(timing)
    first, last = timing["onnx"]["stages"]
    assert last["points_over_flops"] == pytest.approx(10.0) and not last["goal_met"]
    assert first["points_over_flops"] == pytest.approx(15.0) and not first["goal_met"]
    assert not timing["onnx"]["all_stages_goal_met"]  # 1.10x
    assert "int8" not in timing["onnx"]


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path):
    pytest.importorskip("executorch", reason="needs the export extra: pip install 'ponder[export]'")
    pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ponder[onnx]'")
    from ponder._bench.export import run_bench_export

    lines: list[str] = []
    torch_threads = torch.get_num_threads()
    run_bench_export(
        tmp_path, **TINY, exits=(1,), threads=1, repeats=3, warmup=1, echo=lines.append
    )
    assert torch.get_num_threads() == torch_threads  # set to 1 while timing, then restored
    results = json.loads((tmp_path / "export.json").read_text())
    assert (tmp_path / "export.png").stat().st_size > 0
    assert results["machine"]["threads"] == {"executorch": 1, "onnxruntime": 1, "torch": 1}
    assert results["config"]["batch"] == 1 and results["config"]["exit_after_blocks"] == [1]
    assert 0 < results["flops"]["heads_share"] < 0.2
    for backend in ("pte", "onnx"):
        timing = results["timing"][backend]
        assert timing["median_ms_mono"] > 0
        assert [r["stage"] for r in timing["stages"]] == [0, 1]
        fractions = [r["flops_fraction"] for r in timing["stages"]]
        assert 0 < fractions[0] < 1 < fractions[1] < 1.2
        # loose: three rounds on a shared machine; the goals live in the benchmark
        assert all(0 < r["time_fraction"] < 5 for r in timing["stages"])
        assert isinstance(timing["all_stages_goal_met"], bool)
        assert np.asarray(results["raw_ms"][backend]["staged"]).shape == (3, 2)
        assert np.asarray(results["raw_ms"][backend]["monolithic_again"]).shape == (3, 1)
        assert 0 < timing["aa_ratio_paired"] < 5  # the A/A control was timed
    sizes = results["sizes"]
    for variant in ("staged", "monolithic"):
        # one copy of the weights plus program code and metadata, not one copy per stage
        assert 1 <= sizes[variant]["pte_ratio"] < 2
    assert sizes["staged"]["weights_bytes"] > sizes["monolithic"]["weights_bytes"]
    assert results["int8"]["measured"]  # int8 is on by default and must be timed
    # smaller, though not 4x on a model this tiny (program code and fp32 heads weigh in)
    assert sizes["staged_int8"]["pte_bytes"] < sizes["staged"]["pte_bytes"]
    assert sizes["staged_int8"]["onnx_bytes"] < sizes["staged"]["onnx_bytes"]
    for backend in ("pte", "onnx"):
        int8 = results["timing"][backend]["int8"]
        assert [r["stage"] for r in int8] == [0, 1]
        assert all(r["int8_over_fp32"] > 0 for r in int8)
    assert results["machine"]["cpu_features"] == cpu_features()
    assert any(line.startswith("\nint8 against fp32") and "CPU features" in line for line in lines)
    assert any("all stages against one monolithic method" in line for line in lines)


def test_vit_s_sizes_are_the_builder_defaults():
    import inspect

    from ponder._bench.vit import VIT_S

    defaults = inspect.signature(vit_sequential).parameters
    assert {k: defaults[k].default for k in VIT_S} == VIT_S


CPUINFO_X86 = """processor\t: 0
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni
"""
CPUINFO_ARM = """processor\t: 0
Features\t: fp asimd evtstrm asimddp i8mm
"""


def test_cpu_features_are_read_from_cpuinfo():
    assert cpu_features(CPUINFO_X86) == ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]
    assert cpu_features(CPUINFO_ARM) == ["asimd", "asimddp", "i8mm"]
    assert cpu_features("") == []
    assert "VNNI" in int8_dot_product(cpu_features(CPUINFO_X86))
    assert "ARM dot product" in int8_dot_product(cpu_features(CPUINFO_ARM))
    assert "no VNNI" in int8_dot_product(["avx2", "fma"])


def test_goals_are_judged_on_the_paired_ratio():
    # staged/monolithic is 1.02 in three rounds of five; the machine ran at half speed for the
    # monolithic method's last two rounds, so the two medians come from different rounds
    mono = np.array([[0.10], [0.10], [0.10], [0.20], [0.20]])
    ratios = np.array([1.5, 1.5, 1.02, 1.02, 1.02])
    staged = np.column_stack([0.5 * mono[:, 0] * ratios, mono[:, 0] * ratios])  # [R, S]
    timing = summarise({"pte": {"staged": staged, "monolithic": mono}}, [50.0, 100.0], 100.0)
    add_goals(timing)
    last = timing["pte"]["stages"][-1]
    assert last["time_fraction"] == pytest.approx(1.5)  # median 0.15 over median 0.10
    assert last["time_fraction_paired"] == pytest.approx(1.02)
    assert timing["pte"]["all_stages_ratio"] == pytest.approx(1.02)
    assert timing["pte"]["all_stages_goal_met"] and last["goal_met"]


def test_the_a_a_control_is_the_second_copy_over_the_first():
    mono = np.array([[0.10], [0.12], [0.10]])
    again = np.array([[0.11], [0.12], [0.10]])
    staged = np.array([[0.05, 0.10], [0.06, 0.12], [0.05, 0.10]])
    timing = summarise(
        {"onnx": {"staged": staged, "monolithic": mono, "monolithic_again": again}},
        [50.0, 100.0],
        100.0,
    )["onnx"]
    assert timing["aa_ratio"] == pytest.approx(0.11 / 0.10)  # medians 0.11 and 0.10
    assert timing["aa_ratio_paired"] == pytest.approx(1.0)  # per round 1.1, 1.0, 1.0
