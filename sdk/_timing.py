"""Side-by-side timing: variants interleaved in one process, warm-up first, medians reported."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def interleaved(
    variants: Mapping[str, Callable[[], Any]], repeats: int = 30, warmup: int = 3
) -> dict[str, np.ndarray]:
    """Seconds per call of each variant; the order rotates every round so that no variant
    always runs first (caches, frequency scaling and other load hit all variants alike)."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return {name: np.asarray(t) for name, t in times.items()}


# The CPU flags that decide how fast int8 and fp32 kernels can be (x86: /proc/cpuinfo "flags";
# ARM: "Features"). Without VNNI, x86 int8 matrix products take two instructions per step
# (VPMADDUBSW + VPMADDWD) instead of one (VPDPBUSD), so an int8 speed-up shrinks or vanishes.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_int8", "asimd", "asimddp", "i8mm", "sve", "bf16")  # fmt: skip


def cpu_features(cpuinfo: str | None = None) -> list[str]:
    """The `SIMD_FLAGS` this CPU has, read from /proc/cpuinfo (empty where it cannot be read)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return []
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


def machine() -> dict[str, Any]:
    """What a timing was measured on, to print beside every result."""
    import os

    import torch

    from ponder.runtime._engine.profile import cpu_model

    features = cpu_features()
    return {
        "cpu": cpu_model(),
        "cpu_features": features,
        "int8": int8_dot_product(features),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "backend": "eager PyTorch, CPU",
    }
