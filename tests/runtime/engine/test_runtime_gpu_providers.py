"""ONNX Runtime on CUDA and TensorRT: provider names and options, TensorRT's engine cache on
disk, and the IOBinding path (stage outputs kept where the provider computes). The bound path
runs here on the CPU provider, with the same answers as the plain one; the `gpu` tests run it
on CUDA and TensorRT where this onnxruntime build has them, and are skipped elsewhere."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
from tiny_models import inputs

from ponder import ConfigError
from ponder.runtime import Engine, OperatingPoint, cost_table_path
from ponder.runtime._backends.base import (
    OnnxRuntimeBackend,
    choose_providers,
    provider_options,
    tensorrt_cache_dir,
    tensorrt_profiles,
)
from ponder.runtime._engine.profile import profile

ort = pytest.importorskip("onnxruntime")
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_TRT = "TensorrtExecutionProvider" in ort.get_available_providers()


def _x(batch: int = 40) -> np.ndarray:
    return inputs("conv2d", batch=batch, seed=3).numpy()


def _median_point(engine: Engine, x: np.ndarray) -> OperatingPoint:
    """Thresholds at which some samples leave at each exit and the rest go on."""
    b = engine.backend
    logp = b.to_numpy(b.run_stage(0, {"x": b.from_numpy(x)})["exit_logp_0"])
    t = float(np.median(np.exp(logp).max(axis=-1)))
    return OperatingPoint("median", (t, t))


def test_short_provider_names_resolve_and_missing_ones_are_named():
    available = ["CPUExecutionProvider"]
    assert choose_providers(available, ["cpu"]) == ["CPUExecutionProvider"]
    assert choose_providers(available, ["CPU"]) == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match=r"\['CUDAExecutionProvider'\].*onnxruntime-gpu"):
        choose_providers(available, ["cuda", "cpu"])
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(gpu_build) == gpu_build  # best first by default
    assert choose_providers(gpu_build, ["trt", "cuda"]) == gpu_build[:2]


def test_tensorrt_options_cache_engines_per_file_content(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_TRT_CACHE", str(tmp_path / "cache"))
    stage = tmp_path / "stage_0.onnx"
    stage.write_bytes(b"first export")
    names = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    (trt, trt_opts), (cuda, cuda_opts), (cpu, cpu_opts) = provider_options(
        names, stage, "1.2.3", device_id=1, trt_fp16=False
    )
    assert (trt, cuda, cpu) == tuple(names)
    cache = tmp_path / "cache"
    assert trt_opts["trt_engine_cache_enable"] and trt_opts["trt_timing_cache_enable"]
    folder = trt_opts["trt_engine_cache_path"]
    assert folder.startswith(str(cache)) and folder.endswith("-ort1.2.3")
    assert (cache / folder).is_dir()  # made before the session needs it
    assert trt_opts["device_id"] == 1 and trt_opts["trt_fp16_enable"] is False
    assert cuda_opts == {"device_id": 1} and cpu_opts == {}
    # the same file keeps its folder; a re-exported file gets another (no stale engines)
    assert str(tensorrt_cache_dir(stage, "1.2.3")) == folder
    stage.write_bytes(b"second export")
    assert str(tensorrt_cache_dir(stage, "1.2.3")) != folder
    assert str(tensorrt_cache_dir(stage, "1.2.4")) != folder  # another onnxruntime


def test_default_cache_folder_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("PONDER_TRT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    stage = tmp_path / "stage_1.onnx"
    stage.write_bytes(b"x")
    folder = tensorrt_cache_dir(stage, "9")
    assert folder.parent == tmp_path / "ponder" / "tensorrt"
    assert folder.name.startswith("stage_1-")


def test_io_binding_on_the_cpu_gives_the_plain_answers(ztw_bundle):
    plain = Engine.load(ztw_bundle, backend="onnxruntime", providers=["cpu"])
    bound = Engine.load(ztw_bundle, backend="onnxruntime", providers=["cpu"], io_binding=True)
    assert not plain.backend.io_binding and "IOBinding" not in plain.backend.description
    assert bound.backend.io_binding and "IOBinding" in bound.backend.description
    x = _x()
    point = _median_point(plain, x)
    a, b = plain.run(x, point=point), bound.run(x, point=point)
    counts = a.exit_counts(3)
    assert counts[0] > 0 and counts[1] + counts[2] > 0, counts  # rows left and rows went on
    np.testing.assert_array_equal(b.exit_stage, a.exit_stage)
    np.testing.assert_array_equal(b.prediction, a.prediction)
    np.testing.assert_array_equal(b.output, a.output)
    assert b.stage_rows == a.stage_rows


def test_io_binding_feeds_the_moe_tau_and_profiles(moe_bundle):
    x = torch.randn(9, 12, generator=torch.Generator().manual_seed(4)).numpy()
    point = OperatingPoint("tau", (np.inf,), moe_tau=0.8)
    plain = Engine.load(moe_bundle, backend="onnxruntime")
    bound = Engine.load(moe_bundle, backend="onnxruntime", io_binding=True)
    a, b = plain.run(x, point=point), bound.run(x, point=point)
    np.testing.assert_array_equal(b.prediction, a.prediction)
    np.testing.assert_array_equal(b.experts, a.experts)
    table = profile(bound, warmup=1, repeats=3)
    assert len(table.stages) == len(bound.stages)
    assert all(s.latency_ms > 0 for s in table.stages)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="this onnxruntime build has no CUDA provider")
def test_cuda_provider_keeps_stages_on_the_gpu_and_answers_as_the_cpu(ztw_onnx_bundle):
    cpu = Engine.load(ztw_onnx_bundle, backend="onnxruntime", providers=["cpu"])
    gpu = Engine.load(ztw_onnx_bundle, backend="onnxruntime", providers=["cuda", "cpu"])
    assert gpu.backend.providers[0] == "CUDAExecutionProvider"
    assert gpu.backend.io_binding  # on by default on a GPU provider
    got = gpu.backend.run_stage(0, {"x": gpu.backend.from_numpy(_x(4))})
    assert all(v.device_name() == "cuda" for v in got.values())
    x = _x()
    point = _median_point(cpu, x)
    a, b = cpu.run(x, point=point), gpu.run(x, point=point)
    # cuDNN may pick other convolution algorithms: the answers, not the bits, must agree
    assert (a.prediction == b.prediction).mean() >= 0.95
    np.testing.assert_allclose(b.output, a.output, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="this onnxruntime build has no CUDA provider")
def test_gpu_stage_costs_and_energy_feed_the_policy(ztw_onnx_bundle, tmp_path):
    from ponder.runtime import NvmlProbe, PolicySpec

    copy = tmp_path / "bundle"
    shutil.copytree(ztw_onnx_bundle, copy)
    engine = Engine.load(copy, backend="onnxruntime", providers=["cuda", "cpu"], costs=None)
    try:
        meter = NvmlProbe()
    except Exception as e:  # the probe says why (no bindings, no driver)
        pytest.skip(f"NVML: {e}")
    with meter:
        table = profile(engine, warmup=3, repeats=10, meter=meter, energy_source="nvml")
    assert all(s.energy_mj is not None and s.energy_mj > 0 for s in table.stages)
    table.save(cost_table_path(copy, engine.backend.cost_key))
    again = Engine.load(copy, backend="onnxruntime", providers=["cuda", "cpu"])
    assert again.costs is not None and again.costs.device == table.device
    policy = again.policy(PolicySpec.simple(latency_ms=1e3))
    decision = policy.decide(None)
    assert decision.prediction.mean_latency_ms > 0
    assert decision.prediction.mean_energy_mj is not None and decision.prediction.mean_energy_mj > 0


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="this onnxruntime build has no TensorRT provider")
def test_tensorrt_reloads_its_engines_from_the_cache(ztw_onnx_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_TRT_CACHE", str(tmp_path))
    providers = ["tensorrt", "cuda", "cpu"]
    x = _x(8)

    def load_and_run() -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        engine = Engine.load(ztw_onnx_bundle, backend="onnxruntime", providers=providers)
        result = engine.run(x, point=OperatingPoint.full(2))
        return time.perf_counter() - t0, result.output

    built, first = load_and_run()
    engines = list(tmp_path.rglob("*.engine"))
    assert engines, f"no TensorRT engine written under {tmp_path}"
    stamps = {p: p.stat().st_mtime_ns for p in engines}
    reloaded, second = load_and_run()
    assert {p: p.stat().st_mtime_ns for p in engines} == stamps  # read, not rebuilt
    np.testing.assert_allclose(second, first, atol=1e-5)
    print(f"TensorRT: first load + run {built:.2f} s, from the cache {reloaded:.2f} s")


def test_cost_tables_are_kept_per_provider_device(ztw_bundle, tmp_path):
    cpu = Engine.load(ztw_bundle, backend="onnxruntime", providers=["cpu"], io_binding=True)
    assert cpu.backend.cost_key == "onnxruntime"  # bound or not, the CPU's own table
    gpu = OnnxRuntimeBackend.__new__(OnnxRuntimeBackend)  # the key alone, as on a GPU machine
    gpu.device, gpu.providers = ("cuda", 0), ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert gpu.cost_key == "onnxruntime-tensorrt"
    gpu.providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert gpu.cost_key == "onnxruntime-cuda"
    # a table profiled under one key is what Engine.load(costs="auto") reads for that key only
    table = profile(cpu, warmup=1, repeats=2)
    copy = tmp_path / "bundle"
    shutil.copytree(ztw_bundle, copy)
    table.save(cost_table_path(copy, "onnxruntime-cuda"))
    assert Engine.load(copy, backend="onnxruntime").costs is None
    assert (copy / "costs.onnxruntime-cuda.json").is_file()


def test_tensorrt_profiles_span_every_batch_the_exits_leave(ztw_bundle):
    stages = Engine.load(ztw_bundle, backend="onnxruntime").bundle.manifest.stages
    # stage 1 takes the hidden state and the ensemble's running logits, batch from 1 to 256
    assert tensorrt_profiles(stages[1].inputs, max_batch=256, max_tokens=None) == {
        "trt_profile_min_shapes": "hidden_0:1x8x8x8,head_logits_0:1x1x5",
        "trt_profile_opt_shapes": "hidden_0:1x8x8x8,head_logits_0:1x1x5",
        "trt_profile_max_shapes": "hidden_0:256x8x8x8,head_logits_0:256x1x5",
    }

    class Tensor:  # a text stage: token ids and mask, batch x tokens
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    text = [Tensor("input_ids", ["batch", "tokens"]), Tensor("attention_mask", ["batch", "tokens"])]
    got = tensorrt_profiles(text, max_batch=8, max_tokens=128)
    assert got["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert got["trt_profile_opt_shapes"] == "input_ids:1x128,attention_mask:1x128"
    assert got["trt_profile_max_shapes"] == "input_ids:8x128,attention_mask:8x128"
    # a dimension TensorRT cannot be given a range for: its own profiles
    assert tensorrt_profiles([Tensor("x", ["batch", "frames"])], 8, None) is None
    assert tensorrt_profiles(text, 8, None) is None  # tokens without a bound
    # the options carry them, next to the caches
    (_, options), _ = provider_options(
        ["TensorrtExecutionProvider", "CPUExecutionProvider"],
        next(ztw_bundle.glob("onnx/*.onnx")),
        "1",
        0,
        False,
        profiles=got,
    )
    assert options["trt_profile_max_shapes"] == "input_ids:8x128,attention_mask:8x128"
