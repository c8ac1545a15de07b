"""`run_requests`: a stream of requests through an engine under a policy, reading device state at
most once a second, with a summary of what happened (exits, latency, energy, the policy's choices)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ponder._core.errors import ConfigError
from ponder.runtime._engine.result import concat

__all__ = ["ServeReport", "run_requests"]

STATE_EVERY_S = 1.0  # device state changes slowly; reading sysfs per request would cost ~0.1 ms


@dataclass
class ServeReport:
    """What `run_requests` did: per-sample arrays in input order, per-request latency, and every
    decision that changed the operating point (with its explanation)."""

    prediction: np.ndarray | None
    exit_stage: np.ndarray
    by_deadline: np.ndarray
    energy_mj: np.ndarray | None
    experts: np.ndarray | None
    request_ms: np.ndarray  # wall time of each request as the caller sees it
    points: list[str]  # operating point of each request
    switches: list[dict[str, Any]] = field(default_factory=list)
    energy_basis: str = ""

    def summary(self, num_stages: int, labels: np.ndarray | None = None) -> dict[str, Any]:
        ms = self.request_ms
        out = {
            "requests": len(ms),
            "samples": len(self.exit_stage),
            "exits_per_stage": np.bincount(self.exit_stage, minlength=num_stages).tolist(),
            "answered_by_deadline": int(self.by_deadline.sum()),
            "latency_ms": _percentiles(ms),
            "energy_mj_per_sample": None
            if self.energy_mj is None
            else float(self.energy_mj.mean()),
            "energy_basis": self.energy_basis,
            "experts_per_token_layer": None if self.experts is None else float(self.experts.mean()),
            "point_switches": len(self.switches),
        }
        if labels is not None and self.prediction is not None:
            out["accuracy"] = float((self.prediction == labels).mean())
        return out


def run_requests(
    engine: Any,
    inputs: Any,
    *,
    policy: Any = None,
    point: Any = None,
    batch: int = 1,
    deadline_ms: float | None = None,
    read_state: Callable[[], Any] | None = None,
    on_switch: Callable[[Any], None] | None = None,
) -> ServeReport:
    """Run `inputs` (an array, or a dict of arrays for multi-input bundles) as requests of
    `batch` rows in order. With `policy`, each request's point is the policy's decision under
    `read_state()` (a DeviceState; called at most once a second), and `on_switch(decision)` is
    called whenever the point changes."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    arrays = inputs if isinstance(inputs, dict) else {None: inputs}
    n = len(next(iter(arrays.values())))
    parts, request_ms, names, switches = [], [], [], []
    state, read_at = None, -np.inf
    for i in range(0, n, batch):
        if (
            policy is not None
            and read_state is not None
            and time.monotonic() - read_at >= STATE_EVERY_S
        ):
            state, read_at = read_state(), time.monotonic()
        chunk = {k: v[i : i + batch] for k, v in arrays.items()}
        request = chunk.get(None, chunk)  # one unnamed array, or the named inputs
        t0 = time.perf_counter()
        r = engine.run(request, point=point, policy=policy, state=state, deadline_ms=deadline_ms)
        request_ms.append((time.perf_counter() - t0) * 1e3)
        names.append(r.point.name)
        if r.decision is not None and r.decision.changed:
            switches.append({"request": len(request_ms) - 1, **r.decision.to_dict()})
            if on_switch is not None:
                on_switch(r.decision)
        parts.append(r)
    return _report(parts, request_ms, names, switches)


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    q = np.percentile(ms, [50, 95, 99])
    return {"p50": float(q[0]), "p95": float(q[1]), "p99": float(q[2]), "max": float(ms.max())}


def _report(parts: list, request_ms: list[float], names: list[str], switches: list) -> ServeReport:
    def cat(attr: str) -> np.ndarray | None:
        return concat([getattr(p, attr) for p in parts]) if parts else None

    return ServeReport(
        prediction=cat("prediction"),
        exit_stage=cat("exit_stage"),
        by_deadline=cat("by_deadline"),
        energy_mj=cat("energy_mj"),
        experts=cat("experts"),
        request_ms=np.array(request_ms),
        points=names,
        switches=switches,
        energy_basis=parts[0].energy_basis if parts else "",
    )
