"""Critical sparsity (arXiv 2509.00454): for each FFN component, the highest magnitude sparsity
that keeps at least 99% of the model's quality on the given data."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ponder._convert.surgery import get_module
from ponder._core.errors import ConfigError
from ponder._moe.ffn import FFNSpec, find_ffns

COMPONENTS = ("input", "gate", "up", "intermediate")
MODES = ("topk", "threshold")
LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
_SAMPLE = 200_000  # activation magnitudes kept per layer and component to fit thresholds


@dataclass
class CriticalReport:
    """Quality at each sparsity level per component, and the critical sparsity of each."""

    baseline: float
    keep: float
    mode: str
    levels: tuple[float, ...]
    quality: dict[str, list[float]] = field(default_factory=dict)  # component -> per level

    def critical(self, component: str) -> float:
        """Highest level whose quality is >= keep * baseline (levels above a failure too)."""
        best = 0.0
        for level, q in zip(self.levels, self.quality[component], strict=False):
            if q < self.keep * self.baseline:
                break
            best = level
        return best

    def rows(self) -> list[list[Any]]:
        return [
            [c, f"{self.critical(c):.0%}", *(f"{q:.4f}" for q in qs)]
            for c, qs in self.quality.items()
        ]

    def headers(self) -> list[str]:
        return ["component", "critical", *(f"{lv:.0%}" for lv in self.levels)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "keep": self.keep,
            "mode": self.mode,
            "levels": list(self.levels),
            "quality": self.quality,
            "critical": {c: self.critical(c) for c in self.quality},
        }


def _topk_mask(x: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero all but the (1 - sparsity) largest-magnitude entries of each token (last dim)."""
    n = x.shape[-1]
    keep = max(1, round((1.0 - sparsity) * n))
    if keep >= n:
        return x
    idx = x.abs().topk(keep, dim=-1).indices  # [..., keep]
    return torch.zeros_like(x).scatter(-1, idx, x.gather(-1, idx))


def _targets(model: nn.Module, spec: FFNSpec, component: str) -> list[tuple[nn.Module, bool]]:
    """(module, on_input) pairs whose input or output is the component's tensor."""
    first, second = get_module(model, spec.first), get_module(model, spec.second)
    up = get_module(model, spec.up) if spec.up else None
    if component == "input":
        return [(first, True)] + ([(up, True)] if up is not None else [])
    if component == "gate":
        return [(first, False)]
    if component == "up":
        return [(up, False)] if up is not None else []
    return [(second, True)]


def _pre_hook(fn, i, module, args):
    return (fn(i, args[0]), *args[1:])


def _post_hook(fn, i, module, args, output):
    return fn(i, output)


@contextlib.contextmanager
def _applied(
    targets: list[tuple[nn.Module, bool]], fn: Callable[[int, torch.Tensor], torch.Tensor]
):
    """Pass each target's input (pre-hook) or output (hook) through fn(target_index, tensor)."""
    handles = [
        module.register_forward_pre_hook(partial(_pre_hook, fn, i))
        if on_input
        else module.register_forward_hook(partial(_post_hook, fn, i))
        for i, (module, on_input) in enumerate(targets)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _fit_thresholds(model, targets, quality, levels) -> list[dict[float, float]]:
    """Per target, the magnitude below which a `level` share of its activations falls (one
    calibration pass of `quality` over the same data; TEAL-style thresholds)."""
    samples: list[list[torch.Tensor]] = [[] for _ in targets]

    def grab(i: int, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().abs().flatten().float()
        samples[i].append(flat[torch.randperm(flat.numel())[:_SAMPLE]])
        return x

    with _applied(targets, grab):
        quality(model)
    out = []
    for parts in samples:
        pool = torch.cat(parts)
        pool = pool[torch.randperm(pool.numel())[:_SAMPLE]]
        out.append({lv: float(pool.quantile(lv)) if lv > 0 else -1.0 for lv in levels})
    return out


def critical_sparsity(
    model: nn.Module,
    quality: Callable[[nn.Module], float],
    *,
    components: Sequence[str] | None = None,
    levels: Sequence[float] = LEVELS,
    mode: str = "topk",
    keep: float = 0.99,
    ffns: tuple[str, ...] | None = None,
    progress: bool = True,
) -> CriticalReport:
    """Sparsify one FFN component at a time in every FFN, by magnitude, at increasing levels,
    and measure `quality(model)` (higher is better) at each; components that a form lacks
    (`up` outside gated FFNs) are left out. `mode`: "topk" per token, or "threshold" (one
    magnitude cut per layer fitted on a first pass over the same data)."""
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    specs = find_ffns(model, ffns)
    if not specs:
        raise ConfigError(
            f"{type(model).__name__} has no FFN ponder can find; see ponder.MoEConfig(ffns=...)"
        )
    torch.manual_seed(0)
    with torch.no_grad():
        report = CriticalReport(float(quality(model)), keep, mode, tuple(levels))
        for component in components or COMPONENTS:
            targets = [t for spec in specs for t in _targets(model, spec, component)]
            if targets:
                report.quality[component] = _sweep(
                    model, targets, quality, mode, levels, progress, component
                )
    return report


def _sweep(model, targets, quality, mode, levels, progress, component) -> list[float]:
    cuts = _fit_thresholds(model, targets, quality, levels) if mode == "threshold" else None
    results = []
    bar = tqdm(
        levels, desc=f"sparsity {component}", disable=None if progress else True, leave=False
    )
    for level in bar:

        def sparsify(i: int, x: torch.Tensor, level: float = level) -> torch.Tensor:
            if cuts is None:
                return _topk_mask(x, level)
            return x * (x.abs() > cuts[i][level])

        with _applied(targets, sparsify):
            results.append(float(quality(model)))
    return results
