"""`profile`, `run_requests` and the `ponder profile` / `ponder run` commands on a real bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from export_models import ztw_cnn
from tiny_models import CLASSES, inputs

import ponder
from ponder import BundleError, ConfigError
from ponder._cli import main
from ponder._cli.runtime import backend_options
from ponder.runtime import (
    CostTable,
    DeviceState,
    Engine,
    OperatingPoint,
    PolicyRule,
    PolicySpec,
    cost_table_path,
    run_requests,
)
from ponder.runtime._engine.profile import profile


@pytest.fixture
def bundle(ztw_bundle, tmp_path) -> Path:
    """A private copy: the profile is written beside the bundle."""
    return Path(shutil.copytree(ztw_bundle, tmp_path / "bundle"))


def _x(n: int) -> np.ndarray:
    return inputs("conv2d", batch=n, seed=5).numpy()


def test_profile_measures_every_stage_and_round_trips(bundle):
    engine = Engine.load(bundle, "onnxruntime")
    table = profile(engine, batch=2, warmup=1, repeats=5)
    assert [s.index for s in table.stages] == [0, 1, 2]
    assert all(0 < s.latency_ms <= s.latency_p90_ms for s in table.stages)
    assert table.batch == 2 and table.repeats == 5 and table.energy_source is None
    assert "onnxruntime" in table.device
    path = table.save(cost_table_path(bundle, "onnxruntime"))
    assert CostTable.load(path) == table
    assert Engine.load(bundle, "onnxruntime").costs == table  # found beside the bundle


def test_profile_measures_energy_with_a_meter(bundle):
    class Meter:  # 1 mJ per reading, so each stage's energy per call is small and positive
        joules = 0.0

        def read_joules(self):
            self.joules += 1e-3
            return self.joules

    table = profile(
        Engine.load(bundle, "onnxruntime"), warmup=0, repeats=1, meter=Meter(), energy_source="fake"
    )
    assert table.energy_source == "fake"
    assert all(s.energy_mj is not None and 0 < s.energy_mj <= 1.0 for s in table.stages)


def test_profile_and_cost_table_errors(bundle, tmp_path):
    engine = Engine.load(bundle, "onnxruntime")
    with pytest.raises(ConfigError, match="repeats must be >= 1"):
        profile(engine, repeats=0)
    with pytest.raises(BundleError, match="ponder profile"):
        CostTable.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        CostTable.load(tmp_path / "bad.json")


def test_run_requests_follows_the_policy_and_reads_state_sparingly(bundle):
    engine = Engine.load(bundle, "onnxruntime", costs=profile(Engine.load(bundle), repeats=3))
    spec = PolicySpec(
        default=PolicyRule(),
        rules=(PolicyRule("low battery", battery_below=20, latency_ms=1e-6),),
    )
    reads = []

    def read_state():
        reads.append(1)
        return DeviceState(battery_percent=10.0)

    points = [
        OperatingPoint("full", (np.inf, np.inf), accuracy=0.9),
        OperatingPoint("first", (np.inf, np.inf), max_stage=0, accuracy=0.6),
    ]
    policy = engine.policy(spec, points=points)
    report = run_requests(engine, _x(12), policy=policy, batch=3, read_state=read_state)
    assert len(reads) == 1  # 4 requests within a second: one reading
    assert len(report.request_ms) == 4 and report.exit_stage.shape == (12,)
    # the low-battery rule's impossible budget: the cheapest point, every sample at stage 0
    assert (report.exit_stage == 0).all()
    assert report.switches and report.switches[0]["rule"] == "low battery"
    # labels: the eager model's first-exit predictions with three of the twelve made wrong, so
    # the summary must score the stage-0 answers against them: 9 / 12
    eager = ponder.exit_outputs(ztw_cnn(), torch.from_numpy(_x(12))).logp[0].argmax(-1)  # [12]
    labels = eager.copy()
    labels[[1, 6, 10]] = (eager[[1, 6, 10]] + 1) % CLASSES
    summary = report.summary(3, labels=labels)
    assert summary["accuracy"] == 0.75 and summary["exits_per_stage"] == [12, 0, 0]


def test_run_requests_with_a_fixed_point(bundle):
    engine = Engine.load(bundle, "onnxruntime")
    report = run_requests(engine, _x(5), point=OperatingPoint.full(2), batch=2)
    assert report.points == ["always full"] * 3 and (report.exit_stage == 2).all()
    assert report.switches == []


def test_cli_profile_then_run_under_a_latency_budget(bundle, tmp_path):
    runner = CliRunner()
    got = runner.invoke(main, ["profile", str(bundle), "--repeats", "3", "--warmup", "1"])
    assert got.exit_code == 0, got.output
    assert "median ms" in got.output and cost_table_path(bundle, "onnxruntime").is_file()
    np.savez(tmp_path / "in.npz", x=_x(6), y=np.zeros(6, dtype=np.int64))
    out = tmp_path / "run.json"
    got = runner.invoke(
        main,
        [
            "run",
            str(bundle),
            "--input",
            str(tmp_path / "in.npz"),
            "--latency-ms",
            "1000",
            "--out",
            str(out),
        ],
    )
    assert got.exit_code == 0, got.output
    assert "6 requests, 6 samples" in got.output and "accuracy:" in got.output
    assert "policy ->" in got.output  # the first decision is printed with its reasons
    saved = json.loads(out.read_text())
    assert saved["summary"]["requests"] == 6 and len(saved["exit_stage"]) == 6


def test_cli_run_errors(bundle, tmp_path):
    runner = CliRunner()
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 9, 8), np.float32))
    got = runner.invoke(main, ["run", str(bundle), "--input", str(tmp_path / "bad.npy")])
    assert got.exit_code == 1 and "dimension 2 must be 8, not 9" in got.output
    got = runner.invoke(
        main,
        [
            "run",
            str(bundle),
            "--input",
            str(tmp_path / "bad.npy"),
            "--latency-ms",
            "5",
            "--energy-mj",
            "1",
        ],
    )
    assert got.exit_code == 1 and "no energy figures" in got.output
    policy = tmp_path / "p.toml"
    policy.write_text("[default]\nlatency_ms = 5\n")
    got = runner.invoke(
        main,
        [
            "run",
            str(bundle),
            "--input",
            str(tmp_path / "bad.npy"),
            "--policy",
            str(policy),
            "--latency-ms",
            "5",
        ],
    )
    assert got.exit_code == 2 and "not both" in got.output


def test_backend_options_pass_providers_and_device_through():
    providers = ("tensorrt", "CUDAExecutionProvider", "cpu")  # the backend resolves short names
    assert backend_options("onnxruntime", providers=providers) == {"providers": list(providers)}
    assert backend_options("torch", 2, device="cuda:1") == {"threads": 2, "device": "cuda:1"}


def test_cli_provider_and_device_need_their_backends(bundle, tmp_path):
    np.save(tmp_path / "in.npy", _x(2))
    given = str(tmp_path / "in.npy")
    wrong = {
        ("--backend", "torch", "--provider", "cpu"): "--provider needs the onnxruntime backend",
        ("--backend", "executorch", "--provider", "cpu"): "--provider needs the onnxruntime",
        ("--device", "cpu"): "--device needs the torch backend (--backend torch), not onnxruntime",
        ("--backend", "executorch", "--device", "cuda"): "--device needs the torch backend",
    }
    runner = CliRunner()
    for flags, message in wrong.items():
        for command in (["profile", str(bundle)], ["run", str(bundle), "--input", given]):
            got = runner.invoke(main, [*command, *flags])
            assert got.exit_code == 2 and message in got.output, (command, flags, got.output)


def test_cli_runs_on_the_provider_given(bundle, tmp_path):
    runner = CliRunner()
    profile_args = ["--repeats", "2", "--warmup", "1", "--no-energy"]
    got = runner.invoke(
        main, ["profile", str(bundle), "--provider", "CPUExecutionProvider", *profile_args]
    )
    assert got.exit_code == 0, got.output
    assert "providers ['CPU']" in got.output and "median ms" in got.output
    np.save(tmp_path / "in.npy", _x(4))
    got = runner.invoke(
        main, ["run", str(bundle), "--input", str(tmp_path / "in.npy"), "--provider", "cpu"]
    )
    assert got.exit_code == 0 and "4 requests, 4 samples" in got.output, got.output


def test_cli_passes_the_device_to_the_torch_backend(bundle, tmp_path):
    # this bundle records no checkpoint, so the torch backend stops there: after taking --device
    got = CliRunner().invoke(
        main, ["profile", str(bundle), "--backend", "torch", "--device", "cpu"]
    )
    assert got.exit_code == 1 and "does not record the checkpoint" in got.output, got.output
    if not torch.cuda.is_available():  # a device that is not here is refused before that
        got = CliRunner().invoke(
            main, ["profile", str(bundle), "--backend", "torch", "--device", "cuda"]
        )
        assert got.exit_code == 1 and "no CUDA device here" in got.output, got.output
