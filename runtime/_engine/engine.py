"""`Engine`: a bundle on a backend, run stage by stage. Samples whose exit rule fires leave the
batch and the rest go on; an operating point (or a policy) sets the thresholds, a deadline
turns on anytime mode."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ponder._core.errors import ConfigError
from ponder._core.rules import exit_rule, log_softmax, select
from ponder.runtime._backends.base import Backend, load_backend
from ponder.runtime._bundle.bundle import Bundle
from ponder.runtime._bundle.costs import CostTable, cost_table_path
from ponder.runtime._engine.inputs import check_inputs
from ponder.runtime._engine.result import Result, concat
from ponder.runtime._policy.cost_model import CostModel
from ponder.runtime._policy.points import OperatingPoint, operating_points

__all__ = ["Engine"]

DEFAULT_MAX_BATCH = 256


class Engine:
    """Runs a `Bundle` on a `Backend`. Build it with `Engine.load`."""

    def __init__(
        self, bundle: Bundle, backend: Backend, costs: CostTable | None = None, meter: Any = None
    ):
        m = bundle.manifest
        self.bundle, self.backend, self.costs, self.meter = bundle, backend, costs, meter
        self.stages = m.stages
        self.points = operating_points(m)
        # a bundle without early exits names the rule "none": every sample runs to the end
        # and no rule is asked, so any stateless one stands in
        name = "max_prob" if m.exit_rule.name == "none" else m.exit_rule.name
        self.rule = exit_rule(name, ensembled=m.exit_rule.ensembled)
        self.classifier = m.classes is not None
        self.max_batch = m.config.get("export", {}).get("max_batch", DEFAULT_MAX_BATCH)
        self.max_tokens = m.config.get("export", {}).get("max_tokens")  # None: not a text model
        # the engine's own estimate of each stage call (anytime deadlines, energy without a meter)
        self.cost_model = CostModel(len(m.stages), costs, stage_flops=_stage_flops(m.stages))
        self._inputs = [[t.name for t in s.inputs] for s in m.stages]
        self._exit_out = [_exit_output(s) for s in m.stages]
        self._final = m.stages[-1].outputs[0].name
        self._experts = [
            next((t.name for t in s.outputs if t.name.startswith("experts_")), None)
            for s in m.stages
        ]
        moe = m.moe or {}
        self._tau_input = moe.get("tau_input")  # the dynamic_k gate's tau, a stage input
        self.default_tau = (moe.get("gate_params") or {}).get("tau")
        layers = [layer["stage"] for layer in moe.get("layers", [])]
        self._moe_layers = [layers.count(k) for k in range(len(m.stages))]
        later = [set().union(*self._inputs[k + 1 :]) for k in range(len(m.stages))]
        self._carry = later  # names a stage's survivors must keep for the stages after it

    @classmethod
    def load(
        cls,
        bundle: str | Path | Bundle,
        backend: str = "onnxruntime",
        *,
        costs: str | Path | CostTable | None = "auto",
        meter: Any = None,
        verify_hashes: bool = True,
        **options: Any,
    ) -> Engine:
        """Open (and verify) `bundle` and load it on `backend` ("onnxruntime", "executorch" or
        "torch"; see `list_backends()`). options go to the backend: onnxruntime takes
        providers (list, best first: "tensorrt", "cuda", "cpu" or ONNX Runtime's names),
        threads, int8, io_binding, device_id, trt_fp16; executorch takes int8; torch takes
        checkpoint, model, threads, device. costs: a cost table, its path, "auto" (the table
        `ponder profile` stored beside the bundle for this backend and device, named by
        `backend.cost_key`, if any) or None. meter: an energy probe with `read_joules()`
        (RaplProbe, NvmlProbe) to measure energy per stage call."""
        if not isinstance(bundle, Bundle):
            bundle = Bundle.open(bundle, verify_hashes=verify_hashes)
        loaded = load_backend(backend, bundle, **options)
        return cls(bundle, loaded, _cost_table(bundle, loaded.cost_key, costs), meter)

    @property
    def default_point(self) -> OperatingPoint:
        """The bundle's own exit rule thresholds (risk-controlled at export), else the most
        accurate operating point, else the full model."""
        m = self.bundle.manifest
        if m.exit_rule.thresholds is not None:
            return OperatingPoint("bundle exit rule", tuple(m.exit_rule.thresholds))
        if self.points:
            return max(self.points, key=lambda p: (p.accuracy or 0.0, -(p.flops_fraction or 0)))
        return OperatingPoint.full(m.num_exits)

    def policy(
        self,
        spec: Any = None,
        *,
        points: list[OperatingPoint] | None = None,
        power_w: float | None = None,
        alpha: float = 0.2,
    ) -> Any:
        """A `Policy` over this bundle's operating points, predicting from the engine's cost
        table (`ponder profile`) or, without one, from stage FLOPs and the first measurements.
        spec: a PolicySpec (`load_policy(path)`, `PolicySpec.simple(latency_ms=...)`); points:
        what to choose from (default: the bundle's table); power_w: device power for energy
        estimates where the table has no energy. The policy's CostModel is its own (its alpha
        and power_w); `run(policy=...)` feeds it the same stage calls as the engine's."""
        from ponder.runtime._policy.policy import Policy

        n = len(self.stages)
        flops = _stage_flops(self.stages)
        model = CostModel(n, self.costs, stage_flops=flops, power_w=power_w, alpha=alpha)
        return Policy(points or self.points or [self.default_point], model, spec, n)

    def run(
        self,
        inputs: Any,
        *,
        point: OperatingPoint | None = None,
        deadline_ms: float | None = None,
        policy: Any = None,
        state: Any = None,
    ) -> Result:
        """Run a batch. point: the thresholds to use (default `default_point`); policy: a
        `Policy` that chooses the point from `state` (a DeviceState) and learns from the stage
        times measured here; deadline_ms: anytime mode, a sample still running when the next
        stage would not finish in time is answered with its latest exit's prediction."""
        entered, decision = time.perf_counter(), None
        if policy is not None:
            if point is not None:
                raise ConfigError("pass a point or a policy, not both")
            t0 = time.perf_counter()
            decision = policy.decide(state)
            decide_us = (time.perf_counter() - t0) * 1e6
            point = decision.point
        point = point or self.default_point
        if len(point.thresholds) != len(self.stages) - 1:
            raise ConfigError(
                f"operating point {point.name!r} has {len(point.thresholds)} thresholds; this "
                f"bundle has {len(self.stages) - 1} early exits"
            )
        arrays = check_inputs(self.bundle.manifest.inputs, inputs, self.max_batch, self.max_tokens)
        controls = self.controls(point)
        n = next(iter(arrays.values())).shape[0]
        started = time.perf_counter()
        chunks = [
            {k: v[i : i + self.max_batch] for k, v in arrays.items()}
            for i in range(0, n, self.max_batch)
        ]
        parts = [self._run_rows(chunk, controls, point, deadline_ms, started) for chunk in chunks]
        result = _join(parts, point, self.backend.name, decision)
        result.total_ms = (time.perf_counter() - started) * 1e3
        result.energy_basis = self.energy_basis
        # the backend's time per stage (comparable with the cost table) and, apart, the
        # engine's own time: per step (exit rule, rows) and per request (checks, decision)
        steps = len(result.step_ms)
        own = max((sum(result.step_ms) - sum(result.stage_ms)) / max(steps, 1), 0.0)
        outside = max((time.perf_counter() - entered) * 1e3 - sum(result.step_ms), 0.0)
        self.cost_model.observe_request(outside, own)
        if policy is not None:
            result.extra["decide_us"] = decide_us
            policy.observe_stages(result)
            policy.observe_request(outside, own)
        return result

    def controls(self, point: OperatingPoint) -> dict[str, Any]:
        """Inputs the engine sets for every MoE stage: the dynamic_k gate's tau."""
        if self._tau_input is None:
            if point.moe_tau is not None:
                raise ConfigError(
                    f"operating point {point.name!r} sets moe_tau={point.moe_tau}, but this "
                    "bundle's MoE layers take no tau (no MoE, or a top-k/top-p gate); drop it"
                )
            return {}
        tau = self.default_tau if point.moe_tau is None else point.moe_tau
        if not 0.0 <= tau <= 1.0:
            raise ConfigError(f"moe_tau must be in [0, 1] (0 keeps every expert), got {tau}")
        return {self._tau_input: self.backend.from_numpy(np.array([tau], np.float32))}

    def _run_rows(
        self,
        arrays: dict[str, np.ndarray],
        controls: dict[str, Any],
        point: OperatingPoint,
        deadline_ms: float | None,
        started: float,
    ) -> dict[str, Any]:
        """One chunk of at most max_batch rows: stages in order, survivors only."""
        n, last = next(iter(arrays.values())).shape[0], point.last_stage(len(self.stages))
        rows = np.arange(n)  # positions (in this chunk) of the samples still running
        known = {k: self.backend.from_numpy(v) for k, v in arrays.items()}
        out = _Outputs(n)
        state, latest = self.rule.start(n), None
        # an exit nobody may leave at needs no score (stateless rules, no deadline to answer)
        lazy = self.rule.stateless and deadline_ms is None
        for k in range(last + 1):
            if deadline_ms is not None and latest is not None:
                predicted = self.cost_model.call_ms(k, len(rows))
                if (time.perf_counter() - started) * 1e3 + predicted > deadline_ms:
                    out.leave(rows, np.ones(len(rows), bool), latest, k - 1, started, True)
                    break
            step = time.perf_counter()
            feeds = {
                name: known[name] if name in known else controls[name] for name in self._inputs[k]
            }
            got, ms, mj = self._call(k, feeds)
            out.stage(k, len(rows), ms, mj, self._experts_of(k, got), self._moe_layers[k])
            final = k == last or not self.stages[k].exit
            threshold = math.inf if final else point.thresholds[k]
            if lazy and not final and threshold == math.inf:
                known.update(got)
                self._stepped(out, k, step, len(rows))
                continue
            logp = self._logp(k, got)
            if logp is None or (final and self.rule.stateless):
                scores, pred_logp = None, logp  # everyone leaves: no score to compute
            else:
                scores, pred_logp = self.rule.step(logp, state)
            leave = np.ones(len(rows), bool) if final else scores >= threshold
            if final or leave.any():
                answer = pred_logp if logp is not None else self.backend.to_numpy(got[self._final])
                out.leave(rows, leave, answer, k, started, False)
            if final or leave.all():
                self._stepped(out, k, step, len(rows))
                break
            if leave.any():
                keep = ~leave
                kept = np.flatnonzero(keep)
                rows, state, pred_logp = rows[keep], select(state, keep), pred_logp[keep]
                carried = {**known, **got}.items()
                known = {
                    name: self.backend.take(v, kept)
                    for name, v in carried
                    if name in self._carry[k]
                }
            else:
                known.update(got)
            latest = pred_logp
            self._stepped(out, k, step, len(leave))
        return out.finish(self.classifier)

    def _stepped(self, out: _Outputs, k: int, step: float, rows: int) -> None:
        """Record the step as a request sees it: stage call, exit rule, survivors' rows."""
        out.walls.append((time.perf_counter() - step) * 1e3)
        _, _, ms, mj = out.calls[-1]
        self.cost_model.observe(k, ms, mj if self.meter is not None else None, batch=rows)

    def _call(self, k: int, feeds: dict[str, Any]) -> tuple[dict, float, float | None]:
        before = self.meter.read_joules() if self.meter is not None else None
        t0 = time.perf_counter()
        got = self.backend.run_stage(k, feeds)
        ms = (time.perf_counter() - t0) * 1e3
        if before is not None:
            return got, ms, (self.meter.read_joules() - before) * 1e3
        return got, ms, self.cost_model.call_energy_mj(k, ms)

    def _logp(self, k: int, got: dict[str, Any]) -> np.ndarray | None:
        """Log-probs [b, C] the exit rule reads at stage k (None for an embedding model)."""
        if self._exit_out[k] is not None:
            return self.backend.to_numpy(got[self._exit_out[k]])
        if not self.classifier:
            return None
        return log_softmax(self.backend.to_numpy(got[self._final]).astype(np.float32))

    def _experts_of(self, k: int, got: dict[str, Any]) -> np.ndarray | None:
        name = self._experts[k]
        return None if name is None else self.backend.to_numpy(got[name])

    @property
    def energy_basis(self) -> str:
        if self.meter is not None:
            return f"measured by {type(self.meter).__name__} around each stage call"
        return self.cost_model.call_energy_basis


def _stage_flops(stages: Any) -> list[float]:
    """The manifest's per-stage FLOPs; equal weights where it has none (only the cost model's
    extrapolation to stages never timed uses them)."""
    flops = [float(s.flops or 0) for s in stages]
    return flops if sum(flops) > 0 else [1.0] * len(flops)


def _exit_output(stage: Any) -> str | None:
    return next((t.name for t in stage.outputs if t.name.startswith("exit_logp_")), None)


def _cost_table(bundle: Bundle, backend: str, costs: Any) -> CostTable | None:
    if costs is None or isinstance(costs, CostTable):
        return costs
    if costs == "auto":
        path = cost_table_path(bundle.root, backend)
        return CostTable.load(path) if path.is_file() else None
    return CostTable.load(costs)


class _Outputs:
    """Collects per-sample answers of one chunk as samples leave."""

    def __init__(self, n: int):
        self.n = n
        self.exit_stage = np.full(n, -1, np.int64)
        self.by_deadline = np.zeros(n, bool)
        self.latency_ms = np.zeros(n)
        self.output: np.ndarray | None = None
        self.energy = np.zeros(n)
        self.energy_known = True
        self.experts: np.ndarray | None = None
        self.calls: list[tuple[int, int, float, float | None]] = []
        self.walls: list[float] = []  # per call: stage + exit rule + row selection, ms
        self._running = np.arange(n)

    def stage(
        self, k: int, rows: int, ms: float, mj: float | None, experts: Any, layers: int
    ) -> None:
        self.calls.append((k, rows, ms, mj))
        if mj is None:
            self.energy_known = False
        else:
            self.energy[self._running] += mj / rows
        if experts is not None:
            if self.experts is None:
                self.experts, self.layers = np.zeros(self.n), np.zeros(self.n)
            self.experts[self._running] += experts
            self.layers[self._running] += layers

    def leave(
        self,
        rows: np.ndarray,
        leave: np.ndarray,
        values: Any,
        k: int,
        started: float,
        deadline: bool,
    ) -> None:
        values = np.asarray(values)
        if self.output is None:
            self.output = np.zeros((self.n, *values.shape[1:]), values.dtype)
        gone = rows[leave]
        self.output[gone] = values[leave]
        self.exit_stage[gone] = k
        self.by_deadline[gone] = deadline
        self.latency_ms[gone] = (time.perf_counter() - started) * 1e3
        self._running = rows[~leave]

    def finish(self, classifier: bool) -> dict[str, Any]:
        return {
            "output": self.output,
            "prediction": self.output.argmax(axis=-1) if classifier else None,
            "exit_stage": self.exit_stage,
            "by_deadline": self.by_deadline,
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy if self.energy_known else None,
            "experts": None if self.experts is None else self.experts / np.maximum(self.layers, 1),
            "calls": self.calls,
            "walls": self.walls,
        }


def _join(
    parts: list[dict[str, Any]], point: OperatingPoint, backend: str, decision: Any
) -> Result:
    def cat(key: str) -> np.ndarray | None:
        return concat([p[key] for p in parts])

    calls = [c for p in parts for c in p["calls"]]
    return Result(
        prediction=cat("prediction"),
        output=cat("output"),
        exit_stage=cat("exit_stage"),
        by_deadline=cat("by_deadline"),
        latency_ms=cat("latency_ms"),
        energy_mj=cat("energy_mj"),
        energy_basis="",
        experts=cat("experts"),
        stage_ms=[c[2] for c in calls],
        stage_rows=[c[1] for c in calls],
        stage_index=[c[0] for c in calls],
        point=point,
        backend=backend,
        decision=decision,
        step_ms=[w for p in parts for w in p["walls"]],
        extra={"stage_mj": [c[3] for c in calls]},
    )
