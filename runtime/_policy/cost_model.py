"""The one latency and energy estimator of the runtime: a device's cost table, corrected online
from measured stage calls (EWMA); what it implies for an operating point (the policy) and for
one stage call on a given number of rows (the engine's anytime deadlines and energy)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ponder._core.checks import positive
from ponder._core.errors import ConfigError
from ponder.runtime._bundle.costs import CostTable
from ponder.runtime._policy.points import ExitDistribution, OperatingPoint

__all__ = ["CostModel", "Prediction"]

_NO_COSTS = (
    "no stage latency is known yet: measure a cost table with `ponder profile BUNDLE` and pass "
    "it, or pass stage_flops (the manifest's per-stage FLOPs) and observe() a stage time first"
)


@dataclass(frozen=True)
class Prediction:
    """What a point is expected to cost and score per request at batch 1: mean over the exit
    distribution; worst = the tail latency (see CostModel) to `quantile_stage`, the stage by
    which the quantile of samples a latency budget covers have left. Energy None: unknown."""

    accuracy: float | None
    mean_latency_ms: float
    worst_latency_ms: float
    mean_energy_mj: float | None
    flops_fraction: float | None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


SPIKE = 3.0  # an observation counts at most this many times the current estimate
STALE_AFTER = 400  # observations of other stages after which a stage is re-predicted


class CostModel:
    """Per-stage latency (ms) and energy (mJ) of one sample at full clock speed.

    Starts from `table` (or, without one, learns from observe(): stages never observed are
    extrapolated from `stage_flops` at the ms-per-FLOP of the observed ones) and moves each
    estimate toward measurements by an EWMA: est += alpha * (measured - est). Worst-case
    latency (what a latency SLO bounds) adds `tail` times each stage's EW mean absolute
    deviation, and every latency adds the EWMA of the request's time outside its stages.

    Batch model of the per-sample figures (simple, linear): a call at batch B costs B one-sample
    calls, so a batch-B time or energy is divided by B. Exact for energy shared by a batch; for
    latency it ignores per-call overhead, so batch>1 figures understate batch-1 latency. The
    time of one whole call (`call_ms`, for deadlines) is kept apart per batch bucket (powers of
    two), since a call's time is far from proportional to its rows at small batches. Energy where neither the
    table nor observe() measured it: latency × power_w (see `energy_basis`). Throttling
    (DeviceState.speed) scales latency only: a slower clock also draws less power.
    """

    def __init__(
        self,
        num_stages: int,
        table: CostTable | None = None,
        *,
        stage_flops: Sequence[float] | None = None,
        power_w: float | None = None,
        alpha: float = 0.2,
        tail: float = 2.0,
    ):
        if not isinstance(num_stages, int) or num_stages < 1:
            raise ConfigError(f"num_stages must be a positive int, got {num_stages!r}")
        if power_w is not None:
            positive(power_w, "power_w")
        if not 0 < alpha <= 1:
            raise ConfigError(
                f"alpha (EWMA weight of a new measurement) must be in (0, 1], got {alpha}"
            )
        if table is None and stage_flops is None:
            raise ConfigError(_NO_COSTS)
        if not tail >= 0:
            raise ConfigError(
                f"tail (deviations added for worst-case latency) must be >= 0, got {tail}"
            )
        self.num_stages, self.table, self.power_w, self.alpha = num_stages, table, power_w, alpha
        self.tail = tail
        self._dev: list[float] = [0.0] * num_stages  # EW mean |latency - estimate| per stage
        self.request_ms = 0.0  # EWMA of a request's time outside its stage steps
        self.step_ms = 0.0  # EWMA of the engine's own time per stage step (exit rule, rows)
        # EWMA of measured / table latency over every observed stage: a stage the policy has
        # not run lately is predicted at its table figure times this (a machine that got
        # busier or quieter since profiling changes every stage alike)
        self.drift = 1.0
        self._table_ms: list[float | None] = [None] * num_stages
        self._table_dev = [0.0] * num_stages
        # a stage not observed in the last STALE_AFTER observations (of any stage) is predicted
        # from the table again: one slow spike must not keep a policy off it for good
        self._seen_at = [0] * num_stages
        self._count = 0
        self.stage_flops = None if stage_flops is None else self._check_flops(stage_flops)
        self._latency: list[float | None] = [None] * num_stages
        self._energy: list[float | None] = [None] * num_stages  # measured (table or observed)
        if table is not None:
            self._load(table)
        self.observations = [0] * num_stages
        # per stage: ms of one call at full clock per batch bucket, as if the bucket were full
        self._calls: list[dict[int, float]] = [{} for _ in range(num_stages)]
        self._power_w: list[float | None] = [None] * num_stages  # W while stage k runs (table)
        if table is not None:
            for s in table.stages:
                self._calls[s.index][_bucket(table.batch)] = s.latency_ms
                if s.energy_mj is not None and s.latency_ms > 0:
                    self._power_w[s.index] = s.energy_mj / s.latency_ms
        self.version = 0  # bumped by every observe(): lets callers cache what they derive

    def _check_flops(self, flops: Sequence[float]) -> tuple[float, ...]:
        if len(flops) != self.num_stages or any(not f >= 0 for f in flops) or sum(flops) <= 0:
            raise ConfigError(
                f"stage_flops must hold {self.num_stages} non-negative FLOP counts (one per "
                f"stage, not all zero), got {list(flops)}; take them from the manifest's stages"
            )
        return tuple(float(f) for f in flops)

    def _load(self, table: CostTable) -> None:
        if len(table.stages) != self.num_stages or table.batch < 1:
            raise ConfigError(
                f"cost table has {len(table.stages)} stages at batch {table.batch} for a "
                f"{self.num_stages}-stage bundle; measure it again with `ponder profile BUNDLE`"
            )
        for k, s in enumerate(sorted(table.stages, key=lambda s: s.index)):
            self._latency[k] = self._table_ms[k] = s.latency_ms / table.batch
            self._dev[k] = self._table_dev[k] = (
                max(s.latency_p90_ms - s.latency_ms, 0.0) / table.batch
            )
            self._energy[k] = None if s.energy_mj is None else s.energy_mj / table.batch

    @property
    def known(self) -> bool:
        """Whether every stage has a latency estimate (a table, or FLOPs and one observation)."""
        return all(t is not None for t in self._latency) or (
            self.stage_flops is not None and self._ms_per_flop() is not None
        )

    @property
    def has_energy(self) -> bool:
        """Whether every stage has an energy estimate (measured, or latency × power_w)."""
        return self.power_w is not None or all(e is not None for e in self._energy)

    @property
    def energy_basis(self) -> str:
        """Where the energy figures come from, in words."""
        measured = sum(e is not None for e in self._energy)
        t = self.table
        in_table = t is not None and any(s.energy_mj is not None for s in t.stages)
        source = (t.energy_source or "cost table") if in_table else "observe()"
        if measured == self.num_stages:
            return f"measured ({source})"
        if self.power_w is None:
            return "none (no energy probe in the cost table and no power_w)"
        derived = f"latency × {self.power_w:g} W"
        return derived if measured == 0 else f"measured ({source}), elsewhere {derived}"

    def describe(self) -> str:
        """Where the latency figures come from, in words."""
        if self.table is None:
            base = "no cost table: stage FLOPs scaled by measured stage times"
        else:
            t = self.table
            base = f"cost table {t.backend} on {t.device} (batch {t.batch})"
            base += ", SIMULATED" if t.simulated else ""
        return f"{base}; corrected by EWMA (alpha={self.alpha:g})"

    def _ms_per_flop(self) -> float | None:
        seen = [k for k in range(self.num_stages) if self._latency[k] is not None]
        flops = sum(self.stage_flops[k] for k in seen) if self.stage_flops else 0.0
        return sum(self._latency[k] for k in seen) / flops if flops > 0 else None

    def stage_latency_ms(self) -> list[float]:
        """Latency of each stage for one sample at full speed; ConfigError when unknown."""
        if all(t is not None for t in self._latency):
            return [
                self._table_ms[k] * self.drift if self._stale(k) else t
                for k, t in enumerate(self._latency)
            ]
        rate = self._ms_per_flop() if self.stage_flops is not None else None
        if rate is None:
            raise ConfigError(_NO_COSTS)
        return [
            t if t is not None else f * rate
            for t, f in zip(self._latency, self.stage_flops, strict=True)
        ]

    def stage_energy_mj(self) -> list[float] | None:
        """Energy of each stage for one sample, or None when some stage has no estimate."""
        if all(e is not None for e in self._energy):
            return list(self._energy)
        return self.stage_costs()[1] if self.power_w is not None else None

    def stage_costs(self) -> tuple[list[float], list[float] | None]:
        """(stage_latency_ms(), stage_energy_mj()) in one pass."""
        lat, en, watts = self.stage_latency_ms(), self._energy, self.power_w
        if watts is None or all(e is not None for e in en):
            return lat, None if None in en else list(en)
        return lat, [e if e is not None else t * watts for e, t in zip(en, lat, strict=True)]

    def observe(
        self,
        stage: int,
        latency_ms: float,
        energy_mj: float | None = None,
        batch: int = 1,
        speed: float = 1.0,
    ) -> None:
        """Fold one measured call of `stage` (batch `batch`, at clock `speed`) into the EWMA."""
        if not 0 <= stage < self.num_stages:
            raise ConfigError(
                f"stage {stage} is out of range: this bundle has stages 0..{self.num_stages - 1}"
            )
        if not (latency_ms >= 0 and batch >= 1 and speed > 0) or math.isinf(latency_ms):
            raise ConfigError(
                f"observe() needs latency_ms >= 0 (finite), batch >= 1 and speed > 0; got "
                f"{latency_ms!r}, {batch!r}, {speed!r}"
            )
        per = latency_ms * speed / batch
        if self._stale(stage):  # start again from the table, as predictions did meanwhile
            self._latency[stage] = self._table_ms[stage] * self.drift
            self._dev[stage] = self._table_dev[stage] * self.drift
        old = self._latency[stage]
        if old is not None:
            per = min(per, SPIKE * old)  # one outlier moves the estimate, it does not set it
            self._dev[stage] += self.alpha * (abs(per - old) - self._dev[stage])
        if self._table_ms[stage]:
            self.drift += self.alpha * (per / self._table_ms[stage] - self.drift)
        self._latency[stage] = self._ewma(old, per)
        b = _bucket(batch)
        self._calls[stage][b] = self._ewma(
            self._calls[stage].get(b), latency_ms * speed * b / batch
        )
        self._count += 1
        self._seen_at[stage] = self._count
        if energy_mj is not None:
            self._energy[stage] = self._ewma(self._energy[stage], energy_mj / batch)
        self.observations[stage] += 1
        self.version += 1

    def observe_request(self, overhead_ms: float, step_overhead_ms: float | None = None) -> None:
        """Fold one request's time outside its stage steps (input checks, the decision,
        assembling the result) and, if given, the engine's mean time per step beside the
        backend call (exit rule, row selection) into the EWMAs every latency prediction adds:
        the request's once, the step's once per stage run."""
        for value in (overhead_ms, 0.0 if step_overhead_ms is None else step_overhead_ms):
            if not value >= 0 or math.isinf(value):
                raise ConfigError(f"observe_request() needs overheads >= 0 ms, got {value!r}")
        self.request_ms += self.alpha * (overhead_ms - self.request_ms)
        if step_overhead_ms is not None:
            self.step_ms += self.alpha * (step_overhead_ms - self.step_ms)
        self.version += 1

    def call_ms(self, stage: int, rows: int, speed: float = 1.0) -> float:
        """Expected ms of one step of `stage` on `rows` rows at clock `speed`: the call (its
        batch bucket, else the nearest measured bucket scaled rows to rows, pessimistic going
        up) plus the engine's per-step time; 0.0 while the stage was never timed and the cost
        table has no figure for it (nothing is known)."""
        known = self._calls[stage]
        if not known:
            return 0.0
        b = _bucket(rows)
        near = b if b in known else min(known, key=lambda x: abs(math.log2(x) - math.log2(b)))
        return known[near] * rows / near / speed + self.step_ms

    def call_energy_mj(self, stage: int, ms: float) -> float | None:
        """Energy of a call of `stage` that took `ms`: the stage's power in the cost table x
        `ms` (None where the table has no energy for it)."""
        power = self._power_w[stage]
        return None if power is None else power * ms

    @property
    def call_energy_basis(self) -> str:
        """Where `call_energy_mj` comes from, in words."""
        if self.table is None or all(p is None for p in self._power_w):
            return "not estimated: no energy probe and no cost table with energy (ponder profile)"
        label = "simulated " if self.table.simulated else ""
        return (
            f"{label}stage power from the cost table ({self.table.energy_source}) x the "
            "measured stage time"
        )

    def stepped(self, lat: list[float]) -> list[float]:
        """Per-stage latencies with the engine's per-step time added."""
        return [t + self.step_ms for t in lat] if self.step_ms else lat

    def stage_tail_ms(self, lat: list[float] | None = None) -> list[float]:
        """Per-stage latency for worst-case budgets: estimate + `tail` x its EW mean absolute
        deviation (a latency SLO is met by the tail of the distribution, not its mean)."""
        lat = self.stage_latency_ms() if lat is None else lat
        dev = [d * self.drift if self._stale(k) else d for k, d in enumerate(self._dev)]
        return [t + self.tail * d for t, d in zip(lat, dev, strict=True)]

    def _stale(self, k: int) -> bool:
        """Stage k is predicted from the table scaled by the drift: never observed, or not for
        STALE_AFTER observations."""
        if self._table_ms[k] is None:
            return False
        return self.observations[k] == 0 or self._count - self._seen_at[k] > STALE_AFTER

    def _ewma(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.alpha * (new - old)

    def predict(
        self, point: OperatingPoint, speed: float = 1.0, quantile: float = 1.0
    ) -> Prediction:
        """Expected cost of one request at `point` on a device running at clock `speed`;
        worst-case latency at `quantile` of the requests (1.0: every one)."""
        if not speed > 0:
            raise ConfigError(f"speed must be > 0 (1.0 = full clock), got {speed!r}")
        dist = ExitDistribution.of(point, self.num_stages)
        lat, en = self.stage_latency_ms(), self.stage_energy_mj()
        flops = point.flops_fraction
        if flops is None and self.stage_flops is not None:
            flops = dist.expected(self.stage_flops) / sum(self.stage_flops)
        tail = self.stepped(self.stage_tail_ms(lat))
        return Prediction(
            accuracy=point.accuracy,
            mean_latency_ms=dist.expected(self.stepped(lat)) / speed + self.request_ms,
            worst_latency_ms=dist.cost_to_quantile(tail, quantile) / speed + self.request_ms,
            mean_energy_mj=None if en is None else dist.expected(en),
            flops_fraction=flops,
        )


def _bucket(rows: int) -> int:
    """The power of two at or above `rows`."""
    return 1 << (max(rows, 1) - 1).bit_length()
