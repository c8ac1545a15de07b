"""`ponder demo` end to end (what `make demo` runs), and a small `ponder bench exits`."""

import json

import pytest
from click.testing import CliRunner

from ponder._cli import main


@pytest.mark.slow
def test_demo_writes_checkpoint_plot_report_and_explains(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    steps = ("[1/7]", "[2/7]", "[3/7]", "[4/7]", "[5/7]", "[6/7]", "[7/7]")
    for step in (*steps, "risk control", "EEFP"):
        assert step in result.output
    # the last step: offloading to `ponder serve` on loopback, then the server stopped
    offload = json.loads((tmp_path / "offload.json").read_text())
    up, down = offload["up"], offload["down"]
    assert sum(up["sources"].values()) == up["requests"] and up["sources"].get("cloud", 0) >= 1
    assert set(down["sources"]) <= {"local", "fallback"} and down["sources"].get("fallback")
    assert sum(down["sources"].values()) == down["requests"]  # no request lost
    assert down["accuracy"] > 0.9 and up["accuracy"] > 0.9
    assert "stopped the server (pid" in result.output
    assert any("the last offload failed" in line for line in down["explain"])
    assert "matches the offline table" in result.output
    assert "exits and predictions match the eager run" in result.output, result.output
    # the policy over the simulated battery: every band it went through, labelled simulated
    assert "what the policy did as the SIMULATED battery drained" in result.output
    for rule in ("plenty of battery", "middle", "low battery"):
        assert f"rule '{rule}' holds" in result.output or f"[{rule}] budgets" in result.output
    assert (tmp_path / "bundle" / "costs.onnxruntime.json").is_file()
    verified = CliRunner().invoke(main, ["verify", str(tmp_path / "bundle")])
    assert verified.exit_code == 0 and "bundle OK" in verified.output, verified.output
    args = [
        "export",
        str(tmp_path / "checkpoint"),
        "--target",
        "onnx",
        "--quantize",
        "int8",
        "--out",
        str(tmp_path / "int8-bundle"),
    ]
    int8 = CliRunner().invoke(main, args)
    assert int8.exit_code == 0, int8.output
    assert "max err onnx-int8" in int8.output and "int8 vs fp32 (onnx" in int8.output
    manifest = json.loads((tmp_path / "int8-bundle" / "manifest.json").read_text())
    exits = manifest["quantization"]["accuracy"]["onnx"]["exits"]
    assert [e["output"] for e in exits] == ["exit_logp_0", "exit_logp_1", "exit_logp_2", "logits"]
    assert all(abs(e["change"]) < 0.05 and e["agreement"] > 0.9 for e in exits)
    assert any(p["name"] == "risk_controlled" for p in manifest["operating_points"])
    verified = CliRunner().invoke(main, ["verify", str(tmp_path / "int8-bundle")])
    assert verified.exit_code == 0 and "of onnx, onnx-int8 at batch" in verified.output, (
        verified.output
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["online_matches_offline"] is True
    assert report["test"]["full_accuracy"] > 0.9
    assert (tmp_path / "exits.png").stat().st_size > 10_000
    assert {p.name for p in (tmp_path / "checkpoint").iterdir()} == {
        "config.json",
        "weights.safetensors",
    }

    import ponder

    model = ponder.load(tmp_path / "checkpoint")  # a built-in model: no model= needed
    assert model.ponder_exits.num_exits == 4

    # the CLI reads the checkpoint back: same data set (recorded), another delta, a FLOPs budget
    again = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(tmp_path / "checkpoint"),
            "--delta",
            "0.05",
            "--budget",
            "0.6",
            "--out",
            str(tmp_path / "ev"),
        ],
    )
    assert again.exit_code == 0, again.output
    assert "evaluated on digits" in again.output and "risk-controlled" in again.output
    evaluated = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert evaluated["risk_control"]["delta"] == 0.05
    # per-exit thresholds matched to 60% of the FLOPs on calibration land near it on test
    assert evaluated["budget"]["flops_fraction"] == pytest.approx(0.6, abs=0.1)
    assert "per exit, for 60% FLOPs" in again.output
    assert evaluated["test"]["exit_accuracy"] == pytest.approx(report["test"]["exit_accuracy"])

    config = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    config["extra"].pop("data")
    (tmp_path / "checkpoint" / "config.json").write_text(json.dumps(config))
    no_data = CliRunner().invoke(main, ["evaluate", str(tmp_path / "checkpoint")])
    assert no_data.exit_code == 1 and "pass --data NAME" in no_data.output


@pytest.mark.slow
def test_bench_exits_small_run(tmp_path):
    args = [
        "bench",
        "exits",
        "--out",
        str(tmp_path),
        "--samples",
        "2000",
        "--epochs",
        "2",
        "--seeds",
        "2",
        "--width",
        "16",
        "--repeats",
        "2",
        "--quiet",
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "exits.json").read_text())
    assert [run["seed"] for run in data["runs"]] == [0, 1]
    for style in ("sdn", "ztw"):
        assert set(data["runs"][0][style]["accuracy_at_budget"]) == {"0.25", "0.5", "0.75", "1.0"}
        assert len(data["runs"][1][style]["eefp"]) == 6
        auc = data["summary"][style]["auc"]
        assert auc["per_seed"] == [run[style]["auc"] for run in data["runs"]]
        assert min(auc["per_seed"]) <= auc["mean"] <= max(auc["per_seed"])
    points = data["wallclock"]["points"]
    assert {row["batch_size"] for row in points} == {1, 64, 256}
    assert all(0 < row["flops_fraction"] <= 1.1 for row in points)
    assert len(data["wallclock"]["overhead"]) == 3
    assert "time frac" in result.output and (tmp_path / "exits.png").exists()
