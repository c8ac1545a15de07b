"""The cost table `ponder profile` measures on a device: per-stage latency (and energy where a
probe exists) for one backend, stored as JSON beside the bundle, and read by the policy."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ponder._core.errors import BundleError
from ponder.runtime._bundle.layout import cost_table

__all__ = ["CostTable", "StageCost", "cost_table_path"]

COSTS_FORMAT = "ponder-costs"
COSTS_VERSION = 1


def cost_table_path(bundle_root: str | Path, backend: str) -> Path:
    """Where the cost table of `backend` lives: `<bundle>/costs.<backend>.json` (not listed in
    the manifest: it is measured on the device, after export)."""
    return Path(bundle_root) / cost_table(backend)


@dataclass(frozen=True)
class StageCost:
    """One stage at the table's batch size: median and 90th-percentile wall time of one call,
    and the median energy of one call (None where no probe measured it)."""

    index: int
    latency_ms: float
    latency_p90_ms: float
    energy_mj: float | None = None


@dataclass(frozen=True)
class CostTable:
    """Per-stage costs measured on one device and backend. `simulated` marks tables made by the
    simulated device; everything showing their figures must say so."""

    backend: str
    device: str
    batch: int
    threads: int | None
    stages: tuple[StageCost, ...]
    energy_source: str | None = None  # "rapl", "nvml", "ina3221", "simulated" or None
    simulated: bool = False
    repeats: int = 0
    warmup: int = 0
    created_utc: str = field(
        default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    def cumulative_latency_ms(self) -> list[float]:
        """Time to reach the end of each stage: [t0, t0+t1, ...]."""
        out, total = [], 0.0
        for s in self.stages:
            total += s.latency_ms
            out.append(total)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        return {"format": COSTS_FORMAT, "version": COSTS_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostTable:
        if d.get("format") != COSTS_FORMAT or d.get("version") != COSTS_VERSION:
            raise BundleError(
                f"not a ponder cost table (format {d.get('format')!r}, version "
                f"{d.get('version')!r}); measure it again with `ponder profile BUNDLE`"
            )
        d = {k: v for k, v in d.items() if k not in ("format", "version")}
        d["stages"] = tuple(StageCost(**s) for s in d["stages"])
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CostTable:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(
                f"no cost table at {path}; measure one with `ponder profile {path.parent}`"
            ) from None
        except json.JSONDecodeError as e:
            raise BundleError(
                f"{path} is not valid JSON ({e.msg}, line {e.lineno}); measure it again with "
                f"`ponder profile {path.parent}`"
            ) from None
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError) as e:
            raise BundleError(
                f"{path} is not a complete cost table ({e}); measure it again with "
                f"`ponder profile {path.parent}`"
            ) from None
