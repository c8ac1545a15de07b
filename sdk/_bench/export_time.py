"""Timing for `ponder bench export`: the staged bundle (methods chained by name, the clock read
after every stage) against the monolithic one, on ExecuTorch and ONNX Runtime, interleaved."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ponder._bench.timing import interleaved
from ponder.runtime._bundle.layout import MANIFEST, PTE

__all__ = ["AGAIN", "BACKENDS", "runtime_threads", "summarise", "time_bundles"]

BACKENDS = ("pte", "onnx")  # ExecuTorch runtime with the XNNPACK delegate; ONNX Runtime, CPU
AGAIN = "monolithic_again"  # the A/A control: the monolithic bundle, loaded and timed again


@contextlib.contextmanager
def runtime_threads(threads: int) -> Iterator[dict[str, int]]:
    """One thread count for both runtimes: ExecuTorch's process-wide XNNPACK threadpool
    (resized before any method runs) and every ONNX Runtime session's intra-op pool (set where
    the sessions are made); torch's own pool at one thread. All restored afterwards.

    torch does no compute here, but the ExecuTorch Python binding hands every output back
    through a torch copy, and a [1, 197, 384] hidden state is big enough for that copy to wake
    torch's OpenMP pool, whose threads then spin on the cores the next method needs. Measured
    here (ViT-S, 4 stages, ExecuTorch on 1 thread): the staged chain cost 1.11-1.27x the
    monolithic method with torch on 2 threads and 0.98-1.00x with torch on 1 thread.
    """
    from executorch.extension.pybindings import portable_lib

    before = portable_lib._threadpool_get_thread_count(), torch.get_num_threads()
    portable_lib._unsafe_reset_threadpool(threads)
    torch.set_num_threads(1)
    try:
        yield {
            "executorch": portable_lib._threadpool_get_thread_count(),
            "onnxruntime": threads,
            "torch": torch.get_num_threads(),
        }
    finally:
        portable_lib._unsafe_reset_threadpool(before[0])
        torch.set_num_threads(before[1])


class _Chain:
    """Runs a bundle's stages in order, each fed the named outputs of the earlier ones, and
    keeps the clock reading after every stage (seconds since the call began)."""

    def __init__(self, run_stage: Callable[[int, dict], dict], stages: list[dict], x: Any):
        self.run_stage, self.stages, self.x = run_stage, stages, x
        self.splits: list[list[float]] = []

    def __call__(self) -> None:
        known, marks = {"x": self.x}, []
        start = time.perf_counter()
        for i in range(len(self.stages)):
            known.update(self.run_stage(i, known))
            marks.append(time.perf_counter() - start)
        self.splits.append(marks)


def _pte_stage(bundle: Path, stages: list[dict]) -> Callable[[int, dict], dict]:
    from ponder.runtime._backends.executorch import ExecuTorchBackend

    outputs = [[t["name"] for t in s["outputs"]] for s in stages]
    backend = ExecuTorchBackend.from_file(
        bundle / PTE, outputs, methods=[s["method"] for s in stages]
    )
    return _by_name(backend.run_stage, stages)


# `--provider` of the benches: ONNX Runtime providers asked for, best first (a GPU provider
# keeps the CPU for the operators it lacks)
PROVIDER_CHAINS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _onnx_stage(
    bundle: Path, stages: list[dict], threads: int, provider: str
) -> Callable[[int, dict], dict]:
    from ponder.runtime._backends.base import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend.from_files(
        [bundle / s["onnx"] for s in stages], threads=threads, providers=PROVIDER_CHAINS[provider]
    )
    return _by_name(backend.run_stage, stages)


def _by_name(run_stage: Callable[[int, dict], dict], stages: list[dict]) -> Callable:
    """Stage i of a runtime backend, fed its named inputs from what the chain knows so far."""

    def run(i: int, known: dict) -> dict:
        return run_stage(i, {t["name"]: known[t["name"]] for t in stages[i]["inputs"]})

    return run


def time_bundles(
    bundles: dict[str, Path],
    x: torch.Tensor,
    *,
    threads: int,
    repeats: int,
    warmup: int,
    provider: str = "cpu",
) -> dict[str, dict[str, np.ndarray]]:
    """Per backend and bundle (name -> folder with model.pte, onnx/ and a manifest; a folder
    without a manifest borrows the "staged" one's): the cumulative seconds to the end of each
    stage of every call, [repeats, stages]. Every variant runs in one interleaved loop, so
    that load on the machine hits them alike."""
    chains: dict[str, _Chain] = {}
    manifests = {n: b / MANIFEST for n, b in bundles.items()}
    # The monolithic bundle is timed twice, from two loaded copies: an A/A control whose ratio
    # shows how far two identical variants drift apart on this machine in this run.
    variants = {**bundles, AGAIN: bundles["monolithic"]}
    for name, bundle in variants.items():
        manifest = bundle / MANIFEST
        stages = json.loads((manifest if manifest.exists() else manifests["staged"]).read_text())
        stages = stages["stages"]
        chains[f"pte {name}"] = _Chain(_pte_stage(bundle, stages), stages, x)
        chains[f"onnx {name}"] = _Chain(
            _onnx_stage(bundle, stages, threads, provider), stages, x.numpy()
        )
    interleaved(chains, repeats=repeats, warmup=warmup)
    return {
        backend: {n: np.asarray(chains[f"{backend} {n}"].splits[warmup:]) for n in variants}
        for backend in BACKENDS
    }


def summarise(
    timed: dict[str, dict[str, np.ndarray]], cumulative_flops: list[float], mono_flops: float
) -> dict[str, Any]:
    """Per backend and stage: FLOPs fraction and time fraction of the monolithic method.

    time fraction of stage s = median cumulative time to the end of stage s / median monolithic
    time; "paired" is the median over rounds of that ratio within one round (robust to slow
    drifts of the machine's load); "p10" the ratio of 10th percentiles. With a "staged_int8"
    variant, also int8 / fp32 per stage; with the A/A control (`AGAIN`), its ratios to the
    monolithic method ("aa_ratio", "aa_ratio_paired").
    """
    out = {}
    for backend, t in timed.items():
        mono, staged = t["monolithic"][:, -1], t["staged"]  # [R], [R, S]
        rows = [
            {"stage": s, "flops_fraction": flops / mono_flops, **_fraction(staged[:, s], mono)}
            for s, flops in enumerate(cumulative_flops)
        ]
        out[backend] = {
            "median_ms_mono": _ms(mono),
            "iqr_ms_mono": 1e3 * float(np.subtract(*np.percentile(mono, [75, 25]))),
            "iqr_ms_all_stages": 1e3 * float(np.subtract(*np.percentile(staged[:, -1], [75, 25]))),
            "stages": rows,
            "all_stages_ratio": rows[-1]["time_fraction_paired"],
        }
        if AGAIN in t:  # the A/A control: 1.0 on a quiet machine
            again = t[AGAIN][:, -1]
            out[backend]["aa_ratio"] = float(np.median(again) / np.median(mono))
            out[backend]["aa_ratio_paired"] = float(np.median(again / mono))
        if "staged_int8" in t:
            int8 = t["staged_int8"]  # [R, S]
            out[backend]["int8"] = [
                {
                    "stage": s,
                    "median_ms_fp32": _ms(staged[:, s]),
                    **_fraction(int8[:, s], staged[:, s], "int8_over_fp32"),
                }
                for s in range(staged.shape[1])
            ]
    return out


def _ms(seconds: np.ndarray) -> float:
    return 1e3 * float(np.median(seconds))


def _fraction(num: np.ndarray, den: np.ndarray, key: str = "time_fraction") -> dict[str, float]:
    """Median of `num` in ms, the ratio of the medians, the median of per-round ratios, and the
    ratio of the 10th percentiles (each variant's undisturbed speed: on a shared machine one
    variant can spend a run of rounds at half speed while other jobs hold a core)."""
    return {
        "median_ms": _ms(num),
        key: float(np.median(num) / np.median(den)),
        f"{key}_paired": float(np.median(num / den)),
        f"{key}_p10": float(np.percentile(num, 10) / np.percentile(den, 10)),
    }
