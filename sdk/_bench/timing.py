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


def machine() -> dict[str, Any]:
    """What a timing was measured on, to print beside every result."""
    import os

    import torch

    from ponder.runtime._engine.profile import cpu_features, cpu_model, int8_dot_product

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
