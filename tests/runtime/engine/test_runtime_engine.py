"""Engine on real bundles: ONNX Runtime, ExecuTorch and eager torch give the eager model's
adaptive answers; exited samples leave the batch; anytime deadlines; clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from export_models import moe_mlp, ztw_cnn
from tiny_models import inputs, make

import ponder
from ponder import BundleError, ConfigError
from ponder.runtime import Engine, InputError, OperatingPoint, list_backends, manifest_digest

BACKENDS = ["onnxruntime", "executorch"]


def _x(batch: int = 40, seed: int = 3) -> np.ndarray:
    return inputs("conv2d", batch=batch, seed=seed).numpy()


def _median_threshold(engine: Engine, x: np.ndarray) -> float:
    """A shared threshold at which some samples leave at each exit and some go on."""
    backend = engine.backend
    scores = backend.to_numpy(backend.run_stage(0, {"x": backend.from_numpy(x)})["exit_logp_0"])
    return float(np.median(np.exp(scores).max(axis=-1)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_sample_exits_match_eager_adaptive_inference(ztw_bundle, backend):
    engine = Engine.load(ztw_bundle, backend=backend)
    x = _x()
    t = _median_threshold(engine, x)
    result = engine.run(x, point=OperatingPoint("median", (t, t)))
    eager = ponder.infer(ztw_cnn(), torch.from_numpy(x), rule="max_prob", thresholds=t)
    np.testing.assert_array_equal(result.exit_stage, eager.exit_index.numpy())
    np.testing.assert_array_equal(result.prediction, eager.prediction.numpy())
    torch.testing.assert_close(
        torch.from_numpy(result.output), eager.logprobs, atol=1e-4, rtol=1e-4
    )  # the fp32 export tolerance
    counts = result.exit_counts(3)
    assert counts[0] > 0 and counts[1] + counts[2] > 0, counts
    # samples that exited left the batch: each stage ran only on the samples still running
    assert (
        result.stage_rows
        == [40, 40 - counts[0], 40 - counts[0] - counts[1]][: len(result.stage_rows)]
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_stage_makes_everyone_leave_there(ztw_bundle, backend):
    engine = Engine.load(ztw_bundle, backend=backend)
    result = engine.run(_x(), point=OperatingPoint("stop at 1", (np.inf, np.inf), max_stage=1))
    assert result.exit_counts(3) == [0, 40, 0]
    assert result.stage_index == [0, 1]
    full = engine.run(_x(), point=OperatingPoint.full(2))
    assert full.exit_counts(3) == [0, 0, 40]


def test_results_report_latency_per_sample_and_no_energy_without_probe(ztw_bundle):
    engine = Engine.load(ztw_bundle, backend="onnxruntime")
    result = engine.run(_x(8), point=OperatingPoint("stop at 0", (np.inf, np.inf), max_stage=0))
    assert result.latency_ms.shape == (8,) and (result.latency_ms > 0).all()
    assert result.latency_ms.max() <= result.total_ms
    assert result.energy_mj is None and "not estimated" in result.energy_basis
    assert result.experts is None
    json.dumps(result.to_dict())  # JSON-ready


def test_energy_is_measured_with_a_meter(ztw_bundle):
    class Meter:  # a counter that gains 2 J per reading, like a probe on a busy device
        joules = 0.0

        def read_joules(self):
            self.joules += 2.0
            return self.joules

    engine = Engine.load(ztw_bundle, backend="onnxruntime", meter=Meter())
    result = engine.run(_x(10), point=OperatingPoint.full(2))
    # three stage calls of 10 rows, 2 J each, split evenly: 0.6 J per sample
    np.testing.assert_allclose(result.energy_mj, np.full(10, 600.0))
    assert "Meter" in result.energy_basis


@pytest.mark.parametrize("backend", BACKENDS)
def test_anytime_deadline_answers_with_the_latest_exit(ztw_bundle, backend):
    engine = Engine.load(ztw_bundle, backend=backend)
    x = _x()
    engine.run(x, point=OperatingPoint.full(2))  # the engine has now timed every stage
    result = engine.run(x, point=OperatingPoint.full(2), deadline_ms=1e-6)
    assert result.exit_counts(3) == [40, 0, 0] and result.by_deadline.all()
    first = engine.run(x, point=OperatingPoint("stop at 0", (np.inf, np.inf), max_stage=0))
    np.testing.assert_array_equal(result.prediction, first.prediction)
    relaxed = engine.run(x, point=OperatingPoint.full(2), deadline_ms=1e6)
    assert relaxed.exit_counts(3) == [0, 0, 40] and not relaxed.by_deadline.any()


def test_batches_above_the_export_limit_are_split(ztw_bundle):
    engine = Engine.load(ztw_bundle, backend="onnxruntime")
    engine.max_batch = 16
    x = _x(40)
    whole = Engine.load(ztw_bundle, backend="onnxruntime").run(x, point=OperatingPoint.full(2))
    split = engine.run(x, point=OperatingPoint.full(2))
    np.testing.assert_array_equal(split.prediction, whole.prediction)
    assert split.stage_rows == [16, 16, 16, 16, 16, 16, 8, 8, 8]


@pytest.mark.parametrize("backend", BACKENDS)
def test_moe_bundle_reports_experts_and_matches_eager(moe_bundle, backend):
    from ponder._moe.config import expert_counts

    engine = Engine.load(moe_bundle, backend=backend)
    x = torch.randn(9, 12, generator=torch.Generator().manual_seed(4))
    result = engine.run(x.numpy(), point=OperatingPoint.full(1))
    model = moe_mlp()
    with torch.no_grad():
        eager = ponder.infer(model, x, thresholds=2.0)  # a max-prob threshold nobody reaches
        counts = expert_counts(model)
    np.testing.assert_array_equal(result.prediction, eager.prediction.numpy())
    expected = torch.stack(list(counts.values())).float().mean(0).numpy()  # [B] per layer
    np.testing.assert_allclose(result.experts, expected, rtol=1e-6)
    assert (result.experts < 4).any()  # the gate dropped experts for some samples


def test_wrong_inputs_say_what_the_bundle_takes(ztw_bundle):
    engine = Engine.load(ztw_bundle, backend="onnxruntime")
    with pytest.raises(InputError, match=r"dtype float64, the bundle takes float32.*astype"):
        engine.run(_x(2).astype(np.float64))
    with pytest.raises(InputError, match=r"dimension 2 must be 8, not 9"):
        engine.run(np.zeros((2, 1, 9, 8), np.float32))
    with pytest.raises(InputError, match=r"3 dims.*batch dimension"):
        engine.run(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(InputError, match=r"takes inputs \['x'\], got \['image'\]"):
        engine.run({"image": _x(2)})
    with pytest.raises(InputError, match="no rows"):
        engine.run(np.zeros((0, 1, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="has 1 thresholds; this bundle has 2 early exits"):
        engine.run(_x(2), point=OperatingPoint("bad", (0.5,)))


def test_unknown_backend_and_options_are_refused(ztw_bundle):
    assert set(list_backends()) == {"executorch", "onnxruntime", "torch"}
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; known: executorch"):
        Engine.load(ztw_bundle, backend="tensorrt")
    with pytest.raises(
        ConfigError, match=r"does not take option\(s\) \['providers'\]; it takes \['int8'\]"
    ):
        Engine.load(ztw_bundle, backend="executorch", providers=["CPUExecutionProvider"])
    with pytest.raises(
        ConfigError,
        match=r"\['thread'\]; it takes \['device_id', 'int8', 'io_binding', 'providers', "
        r"'threads', 'trt_fp16'\]",
    ):
        Engine.load(ztw_bundle, backend="onnxruntime", thread=1)  # checked by name, before loading
    with pytest.raises(ConfigError, match=r"not in this onnxruntime build.*onnxruntime-gpu"):
        Engine.load(ztw_bundle, backend="onnxruntime", providers=["CUDAExecutionProvider"])


def test_torch_backend_needs_the_checkpoint(ztw_bundle):
    with pytest.raises(BundleError, match=r"does not record the checkpoint.*checkpoint=PATH"):
        Engine.load(ztw_bundle, backend="torch")


def _torch_engine(bundle: Path, tmp_path: Path, **options) -> Engine:
    """The ZTW CNN's checkpoint (saved once per test) on the torch backend."""
    checkpoint = tmp_path / "ckpt"
    if not checkpoint.exists():
        ponder.save(ztw_cnn(), checkpoint)
    return Engine.load(
        bundle, backend="torch", checkpoint=checkpoint, model=make("conv2d"), **options
    )


def test_torch_backend_runs_the_checkpoint_eagerly(ztw_bundle, tmp_path):
    engine = _torch_engine(ztw_bundle, tmp_path)
    onnx = Engine.load(ztw_bundle, backend="onnxruntime")
    x = _x()
    t = _median_threshold(onnx, x)
    point = OperatingPoint("median", (t, t))
    np.testing.assert_array_equal(
        engine.run(x, point=point).prediction, onnx.run(x, point=point).prediction
    )


def test_torch_backend_on_the_cpu_by_name_is_the_default(ztw_bundle, tmp_path):
    default = _torch_engine(ztw_bundle, tmp_path)
    cpu = _torch_engine(ztw_bundle, tmp_path, device="cpu")
    assert "on cpu" in cpu.backend.description
    x = _x()
    t = _median_threshold(default, x)
    point = OperatingPoint("median", (t, t))
    a, b = default.run(x, point=point), cpu.run(x, point=point)
    np.testing.assert_array_equal(b.exit_stage, a.exit_stage)
    np.testing.assert_array_equal(b.prediction, a.prediction)
    np.testing.assert_array_equal(b.output, a.output)  # the same kernels on the same rows
    assert b.stage_rows == a.stage_rows and a.stage_rows[0] > a.stage_rows[-1]  # rows left


def test_torch_backend_refuses_an_unknown_device(ztw_bundle):
    with pytest.raises(ConfigError, match=r"runs on device 'cpu', 'cuda' or 'cuda:N', not 'tpu'"):
        Engine.load(ztw_bundle, backend="torch", device="tpu")  # refused before any loading


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where there is no CUDA")
def test_torch_backend_refuses_cuda_without_a_gpu(ztw_bundle):
    with pytest.raises(ConfigError, match=r"no CUDA device here \(.+\); use device='cpu'"):
        Engine.load(ztw_bundle, backend="torch", device="cuda")


def test_moving_a_traced_stage_moves_the_devices_written_in_its_graph():
    """A traced GPT builds its causal mask with torch.ones(device=cpu): move_stage sends it with
    the weights (shown on the meta device, which every machine has)."""
    from ponder.export._stages.plan import plan_stages
    from ponder.runtime._backends.eager import move_stage

    model, x = make("gpt"), inputs("gpt", batch=3)
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2), example_inputs=x)
    stage = plan_stages(model.eval(), "grouped", {"x": x}).stages[0].module
    meta = torch.device("meta")
    moved = move_stage(stage, meta)
    graphs = [m for m in moved.modules() if isinstance(m, torch.fx.GraphModule)]
    written = [n.kwargs["device"] for g in graphs for n in g.graph.nodes if "device" in n.kwargs]
    assert written and all(d == meta for d in written), written
    assert all(out.device == meta for out in moved(x.to(meta)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_backend_on_cuda_answers_as_onnxruntime_on_the_cpu(
    ztw_onnx_bundle, tmp_path, monkeypatch
):
    # TF32 convolutions (cuDNN's default) are off by ~1e-3, enough to move a sample near the
    # median threshold across it; in fp32 the two runtimes agree to the export tolerance
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    engine = _torch_engine(ztw_onnx_bundle, tmp_path, device="cuda")
    assert "(cuda)" in engine.backend.description
    onnx = Engine.load(ztw_onnx_bundle, backend="onnxruntime", providers=["CPUExecutionProvider"])
    x = _x()
    t = _median_threshold(onnx, x)
    point = OperatingPoint("median", (t, t))
    got, want = engine.run(x, point=point), onnx.run(x, point=point)
    np.testing.assert_array_equal(got.exit_stage, want.exit_stage)
    np.testing.assert_array_equal(got.prediction, want.prediction)
    torch.testing.assert_close(
        torch.from_numpy(got.output), torch.from_numpy(want.output), atol=1e-4, rtol=1e-4
    )
    # samples left at an exit, so the tensors carried on were cut on the GPU (Backend.take)
    assert got.stage_rows == want.stage_rows and got.stage_rows[0] > got.stage_rows[-1]


def test_bundle_of_another_major_version_is_refused(ztw_bundle, tmp_path):
    copy = Path(shutil.copytree(ztw_bundle, tmp_path / "bundle"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = "2.0"
    manifest["manifest_sha256"] = manifest_digest(manifest)  # a sealed bundle of format 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"bundle schema 2.x, this ponder reads 1.x: upgrade"):
        Engine.load(copy, backend="onnxruntime")


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_onnxruntime_backend_runs_with_torch_unimportable(ztw_bundle):
    x = _x(12)
    np.save(ztw_bundle.parent / "x.npy", x)
    expected = Engine.load(ztw_bundle, backend="onnxruntime").run(x, point=OperatingPoint.full(2))
    got = _run_isolated(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now fails
        import numpy as np
        from ponder.runtime import Engine, OperatingPoint
        engine = Engine.load({str(ztw_bundle)!r}, backend="onnxruntime")
        x = np.load({str(ztw_bundle.parent / "x.npy")!r})
        print(engine.run(x, point=OperatingPoint.full(2)).prediction.tolist())
        """)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == str(expected.prediction.tolist())


def test_missing_backend_package_says_what_to_install(ztw_bundle):
    got = _run_isolated(f"""
        import sys
        sys.modules["onnxruntime"] = None
        from ponder.runtime import Engine
        from ponder import MissingDependencyError
        try:
            Engine.load({str(ztw_bundle)!r}, backend="onnxruntime")
        except MissingDependencyError as e:
            print(type(e).__name__, e)
        """)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("MissingDependencyError"), got.stdout
    assert "pip install 'ponder[onnx]'" in got.stdout, got.stdout


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tau", [0.0, 0.8])
def test_moe_tau_is_set_per_request_and_matches_eager(moe_bundle, backend, tau):
    from ponder._moe.config import expert_counts, set_gate_

    engine = Engine.load(moe_bundle, backend=backend)
    x = torch.randn(9, 12, generator=torch.Generator().manual_seed(4))
    result = engine.run(x.numpy(), point=OperatingPoint("tau", (np.inf,), moe_tau=tau))
    model = set_gate_(moe_mlp(), "dynamic_k", tau=tau)
    with torch.no_grad():
        eager = ponder.infer(model, x, thresholds=2.0)
        counts = expert_counts(model)
    np.testing.assert_array_equal(result.prediction, eager.prediction.numpy())
    expected = torch.stack(list(counts.values())).float().mean(0).numpy()
    np.testing.assert_allclose(result.experts, expected, rtol=1e-6)
    if tau == 0.0:
        assert (result.experts == 4).all()  # tau 0 keeps every expert


def test_moe_tau_errors(moe_bundle, ztw_bundle):
    engine = Engine.load(moe_bundle, backend="onnxruntime")
    assert engine.default_tau == pytest.approx(0.3)  # the gate's tau at export
    with pytest.raises(ConfigError, match=r"moe_tau must be in \[0, 1\]"):
        engine.run(np.zeros((1, 12), np.float32), point=OperatingPoint("t", (0.5,), moe_tau=2.0))
    plain = Engine.load(ztw_bundle, backend="onnxruntime")
    with pytest.raises(ConfigError, match="take no tau"):
        plain.run(_x(1), point=OperatingPoint("t", (0.5, 0.5), moe_tau=0.5))
