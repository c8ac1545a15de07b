"""`ponder simulate` on a small sealed bundle with dummy payloads and a cost table beside it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ponder._cli import main
from ponder.runtime import CostTable, StageCost, cost_table_path, write_manifest

_spec = importlib.util.spec_from_file_location(
    "runtime_bundle_helpers", Path(__file__).parents[2] / "runtime" / "conftest.py"
)
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)  # manifest_without_files() and PAYLOADS, shared with runtime

POINTS = [
    {
        "name": "early",
        "thresholds": [0.5, 0.5],
        "max_stage": 0,
        "moe_tau": None,
        "accuracy": 0.80,
        "accuracy_drop": 0.18,
        "flops_fraction": 0.57,
        "exit_fractions": [1.0, 0.0, 0.0],
    },
    {
        "name": "most",
        "thresholds": [0.99, 0.99],
        "max_stage": None,
        "moe_tau": None,
        "accuracy": 0.98,
        "accuracy_drop": 0.0,
        "flops_fraction": 0.87,
        "exit_fractions": [0.2, 0.3, 0.5],
    },
]


@pytest.fixture
def bundle(tmp_path) -> Path:
    root = tmp_path / "bundle"
    for rel, data in helpers.PAYLOADS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    manifest = helpers.manifest_without_files()
    manifest["operating_points"] = POINTS
    write_manifest(root, manifest, list(helpers.PAYLOADS))
    return root


@pytest.fixture
def trace(tmp_path) -> Path:
    path = tmp_path / "trace.csv"
    path.write_text("time_s,requests_per_s,charging\n0,100,0\n3600,100,1\n7200,0,1\n")
    return path


def test_simulate_prints_a_simulated_table_and_writes_json_and_png(bundle, trace, tmp_path):
    stages = tuple(StageCost(i, 1.0, 1.1) for i in range(3))
    CostTable("onnxruntime", "test-cpu", 1, 1, stages).save(cost_table_path(bundle, "onnxruntime"))
    out = tmp_path / "out"
    args = [
        "simulate",
        str(bundle),
        "--trace",
        str(trace),
        "--slowdown",
        "1",
        "--battery-wh",
        "0.3",
        "--step-s",
        "120",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "SIMULATED replay" in result.output and "strategy (simulated)" in result.output
    assert "lifetime gained vs always-full" in result.output and "simulated" in result.output
    assert "policy switches (simulated)" in result.output
    data = json.loads((out / "simulate.json").read_text())
    assert data["simulated"] is True and data["scenario"]["battery_wh"] == 0.3
    assert (out / "simulate.png").stat().st_size > 10_000


def test_simulate_without_a_cost_table_says_to_profile(bundle, trace):
    result = CliRunner().invoke(main, ["simulate", str(bundle), "--trace", str(trace)])
    assert result.exit_code != 0
    assert "ponder profile" in result.output and "--costs" in result.output


def test_simulate_with_pacing_shows_each_window_against_its_budget(bundle, trace, tmp_path):
    stages = tuple(StageCost(i, 1.0, 1.1) for i in range(3))
    CostTable("onnxruntime", "test-cpu", 1, 1, stages).save(cost_table_path(bundle, "onnxruntime"))
    # 100 requests/s for an hour: "most" needs 1.66 kJ, "early" 0.72; 3% of 10 Wh is 1.08 kJ
    policy = tmp_path / "paced.toml"
    policy.write_text("[pacing]\nbattery_percent = 3\nbattery_wh = 10\n")
    out = tmp_path / "out"
    args = ["simulate", str(bundle), "--trace", str(trace), "--policy", str(policy)]
    args += ["--slowdown", "1", "--battery-wh", "10", "--step-s", "120", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "[pacing] under every rule: at most 3% of a 10 Wh battery (1,080 J)" in result.output
    assert "energy pacing (simulated)" in result.output and "unpaced J" in result.output
    assert "windows over the 1,080 J budget: policy 0 of 2" in result.output
    assert "policy without pacing 1 of 2" in result.output
    data = json.loads((out / "simulate.json").read_text())
    assert len(data["pacing"]["windows"]) == 2 and data["pacing"]["budget_j"] == 1080
    assert (out / "simulate.png").stat().st_size > 10_000
