"""`profile`: time every stage of a loaded bundle on this device (warm-up, interleaved rounds,
medians), measure energy per stage where a probe can, and return the cost table."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import BundleError, ConfigError
from ponder.runtime._bundle.costs import CostTable, StageCost

__all__ = ["cpu_features", "cpu_model", "describe_machine", "int8_dot_product", "profile"]

ENERGY_SECONDS = 0.5  # per stage: RAPL updates about every millisecond, NVML power every ~1 s


def profile(
    engine: Any,
    *,
    batch: int = 1,
    warmup: int = 5,
    repeats: int = 30,
    meter: Any = None,
    energy_source: str | None = None,
    echo: Callable[[str], None] = lambda line: None,
) -> CostTable:
    """Per-stage latency of `engine` at `batch` rows: every stage is fed the inputs it gets in
    a real chained run of the bundle's stored samples; after `warmup` rounds, `repeats` rounds
    call stage 0, 1, ... in turn (interleaved, so a machine-wide slowdown hits every stage
    alike) and the median and 90th percentile are kept. With `meter` (read_joules()), each
    stage then runs back to back for ENERGY_SECONDS and its energy per call is recorded."""
    if batch < 1 or warmup < 0 or repeats < 1:
        raise ConfigError("batch and repeats must be >= 1 and warmup >= 0")
    feeds = _stage_feeds(engine, batch)
    backend, stages = engine.backend, range(len(feeds))
    times = [[] for _ in stages]
    for round_ in range(warmup + repeats):
        for k in stages:
            t0 = time.perf_counter()
            backend.run_stage(k, feeds[k])
            if round_ >= warmup:
                times[k].append((time.perf_counter() - t0) * 1e3)
        if round_ == warmup:
            echo(f"warm-up done ({warmup} rounds); timing {repeats} interleaved rounds")
    energy = [_energy_per_call(backend, k, feeds[k], meter) for k in stages] if meter else None
    return CostTable(
        backend=backend.name,
        device=f"{describe_machine()}; {backend.description}",
        batch=batch,
        threads=getattr(backend, "threads", None),
        stages=tuple(_stage_cost(k, t, energy) for k, t in enumerate(times)),
        energy_source=energy_source if meter else None,
        repeats=repeats,
        warmup=warmup,
    )


def _stage_cost(k: int, ms: list[float], energy: list[float] | None) -> StageCost:
    mj = None if energy is None else energy[k]
    return StageCost(k, float(np.median(ms)), float(np.percentile(ms, 90)), mj)


def _stage_feeds(engine: Any, batch: int) -> list[dict[str, Any]]:
    """Each stage's named inputs from one chained run of the stored samples (first row
    repeated to `batch` rows), in the backend's own array type."""
    path = engine.bundle.samples_path
    if not path.is_file():
        raise BundleError(f"{path} is missing: the bundle stores no sample inputs to profile with")
    with np.load(path) as stored:
        names = [t.name for t in engine.bundle.manifest.inputs]
        known = {
            n: engine.backend.from_numpy(np.repeat(stored[n][:1], batch, axis=0)) for n in names
        }
    known.update(engine.controls(engine.default_point))  # an MoE bundle's tau, as run() sets it
    feeds = []
    for k, stage in enumerate(engine.bundle.manifest.stages):
        feeds.append({t.name: known[t.name] for t in stage.inputs})
        known.update(engine.backend.run_stage(k, feeds[-1]))
    return feeds


def _energy_per_call(backend: Any, k: int, feeds: dict[str, Any], meter: Any) -> float:
    """mJ per call of stage k, from the meter's joules over ENERGY_SECONDS of back-to-back calls."""
    calls, start, t0 = 0, meter.read_joules(), time.perf_counter()
    while time.perf_counter() - t0 < ENERGY_SECONDS:
        backend.run_stage(k, feeds)
        calls += 1
    return (meter.read_joules() - start) * 1e3 / calls


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` says."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# The CPU flags that decide how fast int8 and fp32 kernels can be (x86: /proc/cpuinfo "flags";
# ARM: "Features"). Without VNNI, x86 int8 matrix products take two instructions per step
# (VPMADDUBSW + VPMADDWD) instead of one (VPDPBUSD), so an int8 speed-up shrinks or vanishes.
SIMD_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
    "bf16",
)


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The `SIMD_FLAGS` this CPU has, read from /proc/cpuinfo (empty where it cannot be read)."""
    if cpuinfo is None:
        cpuinfo = _cpuinfo()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [flag for flag in SIMD_FLAGS if flag in flags]


def int8_dot_product(features: list[str]) -> str:
    """How this CPU multiplies int8 matrices, in words, for reports beside int8 figures."""
    if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(features):
        return "int8 dot products in one instruction (VNNI)"
    if {"asimddp", "i8mm"} & set(features):
        return "int8 dot products in one instruction (ARM dot product)"
    if "avx2" in features:
        return "no VNNI: int8 products take two instructions (VPMADDUBSW + VPMADDWD)"
    return "no int8 dot-product instructions found"


def describe_machine() -> str:
    """CPU model and core count, as far as the OS says."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
