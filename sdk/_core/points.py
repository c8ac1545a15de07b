"""Operating points: the settings a policy chooses between (exit thresholds, a last stage, MoE
tau) with what they are expected to cost and score. One torch-free type for the sdk's
calibration, the export's manifest and the runtime's policy."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from ponder._core.errors import ConfigError

__all__ = ["OperatingPoint"]


@dataclass(frozen=True)
class OperatingPoint:
    """One row of the table a policy chooses from.

    A sample leaves at early exit k when its exit-rule score is >= thresholds[k]; every sample
    still running leaves at stage `max_stage` (None: the last stage). `exit_fractions[k]` is the
    share of calibration samples that left at stage k (one entry per stage, summing to 1), so
    the expected cost of a point is sum_k exit_fractions[k] * (cost of stages 0..k).
    `accuracy`, `flops_fraction` and `accuracy_drop` (against the full model) were measured on
    the calibration split (`ponder.operating_points`); a bundle's manifest stores them
    (`ponder.runtime.operating_points` reads them back).
    """

    name: str
    thresholds: tuple[float, ...]
    max_stage: int | None = None
    moe_tau: float | None = None
    accuracy: float | None = None
    flops_fraction: float | None = None
    exit_fractions: tuple[float, ...] = ()
    accuracy_drop: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.max_stage is not None and self.max_stage < 0:
            raise ConfigError(f"operating point {self.name!r}: max_stage must be >= 0")
        if any(math.isnan(t) for t in self.thresholds):
            raise ConfigError(f"operating point {self.name!r}: a threshold is NaN")

    def last_stage(self, num_stages: int) -> int:
        """The stage where every sample still running leaves."""
        return num_stages - 1 if self.max_stage is None else min(self.max_stage, num_stages - 1)

    @classmethod
    def full(cls, num_exits: int) -> OperatingPoint:
        """Every sample runs the whole model (no early exit)."""
        return cls("always full", (math.inf,) * num_exits)

    @classmethod
    def earliest(cls, num_exits: int) -> OperatingPoint:
        """Every sample leaves at the first stage."""
        return cls("always earliest", (math.inf,) * num_exits, max_stage=0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatingPoint:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            name=d["name"],
            thresholds=tuple(math.inf if t is None else float(t) for t in d["thresholds"] or ()),
            max_stage=d.get("max_stage"),
            moe_tau=d.get("moe_tau"),
            accuracy=d.get("accuracy"),
            flops_fraction=d.get("flops_fraction"),
            accuracy_drop=d.get("accuracy_drop"),
            exit_fractions=tuple(d.get("exit_fractions") or ()),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; an infinite threshold (never exit there) is written as null, and
        accuracy_drop only when known (the key order is the manifest's)."""
        drop = {} if self.accuracy_drop is None else {"accuracy_drop": self.accuracy_drop}
        return {
            "name": self.name,
            "thresholds": [None if math.isinf(t) else t for t in self.thresholds],
            "max_stage": self.max_stage,
            "moe_tau": self.moe_tau,
            "accuracy": self.accuracy,
            "flops_fraction": self.flops_fraction,
            **drop,
            "exit_fractions": list(self.exit_fractions),
            **self.extra,
        }

    def __getitem__(self, key: str) -> Any:
        """The dict access of earlier releases (`point["threshold"]`, `point["accuracy"]`),
        kept for one release with a DeprecationWarning; use the attributes."""
        warnings.warn(
            f"operating points are OperatingPoint objects now: use point.{_ATTRIBUTE.get(key, key)} "
            f"instead of point[{key!r}]",
            DeprecationWarning,
            stacklevel=2,
        )
        if key == "threshold":
            if len(set(self.thresholds)) > 1:
                raise KeyError(f"{self.name!r} has one threshold per exit: use point.thresholds")
            return self.thresholds[0] if self.thresholds else math.inf
        if key not in _ATTRIBUTE.values() or key == "thresholds":
            raise KeyError(key)
        value = getattr(self, key)
        return list(value) if key == "exit_fractions" else value


# the keys of the dicts `ponder.operating_points` returned before it returned OperatingPoints
_ATTRIBUTE = {
    "threshold": "thresholds",
    "accuracy": "accuracy",
    "flops_fraction": "flops_fraction",
    "accuracy_drop": "accuracy_drop",
    "exit_fractions": "exit_fractions",
}
