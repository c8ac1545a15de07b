"""`ponder bench runtime` end to end on a narrow digits CNN (train, export, profile, SLO sweep,
overheads, throughput, JSON, plot, table), and its goal marks."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ponder._bench.runtime_report import add_goals
from ponder._cli import main


def _results(within=0.995, accuracy=0.95, best=0.955, decide=20.0, ratio=1.02):
    row = {
        "within": within,
        "accuracy": accuracy,
        "hindsight_accuracy": best,
        "decide_us_median": decide,
    }
    return {"slo": {"goal_within": 0.99, "rows": [row]}, "overhead": {"ratio": ratio}}


def test_goal_marks():
    ok = _results()
    add_goals(ok)
    row = ok["slo"]["rows"][0]
    assert row["within_goal_met"] and row["accuracy_goal_met"] and row["decide_goal_met"]
    assert ok["overhead"]["goal_met"]
    bad = _results(within=0.98, accuracy=0.93, decide=60.0, ratio=1.05)
    add_goals(bad)
    row = bad["slo"]["rows"][0]
    assert not (row["within_goal_met"] or row["accuracy_goal_met"] or row["decide_goal_met"])
    assert not bad["overhead"]["goal_met"]


@pytest.mark.slow
def test_bench_runtime_end_to_end(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("executorch")
    args = [
        "bench",
        "runtime",
        "--out",
        str(tmp_path),
        "--width",
        "8",
        "--budgets",
        "2",
        "--rounds",
        "1",
        "--repeats",
        "1",
        "--no-vit",
        "--quiet",
    ]
    got = CliRunner().invoke(main, args)
    assert got.exit_code == 0, got.output
    assert "latency SLO" in got.output and "engine overhead" in got.output
    assert "batch 64 throughput" in got.output
    results = json.loads((tmp_path / "runtime.json").read_text())
    rows = results["slo"]["rows"]
    assert len(rows) == 2 and all(0 <= r["within"] <= 1 for r in rows)
    assert rows[-1]["budget_ms"] == pytest.approx(results["slo"]["full_ms"])
    t = results["throughput"]
    assert t["batch"] == 64 and 0 < t["flops_fraction"] <= 1 and t["time_fraction"] > 0
    assert sum(t["exit_counts"]) == 64 * (360 // 64)
    assert (tmp_path / "runtime.png").stat().st_size > 10_000
    assert (tmp_path / "bundle" / "costs.onnxruntime.json").is_file()


@pytest.mark.slow
def test_vit_overhead_on_a_tiny_vit(tmp_path):
    pytest.importorskip("onnxruntime")
    from ponder._bench.runtime import vit_overhead

    sizes = dict(blocks=4, width=32, heads=2, image=32, patch=8, classes=10)
    got = vit_overhead(tmp_path / "vit", sizes, repeats=3, echo=lambda line: None)
    assert got["stages"] == 4 and got["direct_ms"] > 0 and got["engine_ms"] > 0
    assert (tmp_path / "vit" / "manifest.json").is_file()
