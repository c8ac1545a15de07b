"""`ponder bench transformer`: text chunks cut to their longest row, the FLOPs fraction weighted
by tokens, the goals, and the digits ViT end to end (train, export staged and whole, time on both
runtimes, JSON, plot, table)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ponder._bench.transformer import _chunks, run_bench_transformer
from ponder._bench.transformer_report import add_goals
from ponder._core.errors import ConfigError


def test_text_chunks_are_cut_to_their_longest_row():
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    x = {"input_ids": np.arange(12).reshape(3, 4), "attention_mask": mask}
    first, second = _chunks(x, 2)
    assert first["input_ids"].tolist() == [[0, 1], [4, 5]]
    assert first["attention_mask"].shape == (2, 2)
    assert second["input_ids"].tolist() == [[8, 9, 10]]


def test_image_chunks_keep_their_shape():
    x = {"x": np.zeros((5, 1, 8, 8), np.float32)}
    assert [c["x"].shape for c in _chunks(x, 2)] == [(2, 1, 8, 8)] * 2 + [(1, 1, 8, 8)]


def _timing(batch: int, name: str, time: float, flops: float) -> dict:
    point = {"name": name, "time_fraction_paired": time, "flops_fraction": flops}
    return {"batch": batch, "points": [point]}


def test_goals_by_batch_and_for_all_stages():
    results = {
        "timing": [
            _timing(1, "a", 0.54, 0.50),  # 4 points over at batch 1: within 5
            _timing(64, "a", 0.54, 0.50),  # 4 points over at batch 64: not within 3
            _timing(64, "always full", 1.02, 1.01),
            _timing(8, "a", 0.9, 0.5),  # no goal at batch 8
        ]
    }
    add_goals(results)
    met = [t["points"][0]["goal_met"] for t in results["timing"]]
    assert met == [True, False, True, None]
    assert results["timing"][0]["points"][0]["gap"] == pytest.approx(0.04)


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="Unknown model"):
        run_bench_transformer(tmp_path, model="resnet")
    with pytest.raises(ConfigError, match="Unknown backends"):
        run_bench_transformer(tmp_path, backends=("tensorrt",))
    with pytest.raises(ConfigError, match="at least the largest batch"):
        run_bench_transformer(tmp_path, samples=8, batches=(1, 64))


@pytest.mark.slow
def test_digits_vit_end_to_end(tmp_path):
    lines = []
    results = run_bench_transformer(
        tmp_path,
        model="digits-vit",
        epochs=2,
        num_exits=2,
        samples=16,
        batches=(1, 8),
        repeats=2,
        progress=False,
        echo=lines.append,
    )
    timing = results["timing"]
    assert [(t["backend"], t["batch"]) for t in timing] == [
        ("onnxruntime", 1),
        ("onnxruntime", 8),
        ("executorch", 1),
        ("executorch", 8),
    ]
    for t in timing:
        full = t["points"][-1]
        assert full["name"] == "always full"
        assert full["exit_counts"] == [0, 0, 16]  # every sample ran every stage
        assert full["agreement_with_whole"] == 1.0  # the staged model's own head is the whole's
        assert full["flops_fraction"] > 1.0  # the exit heads cost something
        for p in t["points"]:
            assert sum(p["exit_counts"]) == 16 and p["time_fraction_paired"] > 0
    saved = json.loads((tmp_path / "transformer.json").read_text())
    assert saved["config"]["samples"] == 16 and (tmp_path / "transformer.png").stat().st_size
    assert any("always full" in line for line in lines)
    again = run_bench_transformer(
        tmp_path,
        model="digits-vit",
        epochs=2,
        num_exits=2,
        samples=16,
        batches=(1,),
        backends=("onnxruntime",),
        repeats=1,
        reuse=True,
        progress=False,
        echo=lines.append,
    )
    assert any(line.startswith("reusing") for line in lines)
    assert again["flops"] == results["flops"]
