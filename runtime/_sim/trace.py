"""Usage traces for the simulated device and for replaying recorded battery curves.

Trace CSV: a header `time_s,requests_per_s,charging[,ambient_c][,battery_percent]`, then one
row per change, at strictly increasing `time_s` (seconds); each row holds until the next.
`charging` is 1/0 (or true/false, yes/no); the optional columns may be empty on a row. Lines
starting with `#` are comments; `# synthetic` marks a made-up trace (`day_trace`).
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ponder._core.errors import ConfigError
from ponder.runtime._telemetry.state import DeviceState
from ponder.runtime._telemetry.sysfs import BatteryState

__all__ = ["ReplayProbe", "Trace", "TracePoint", "day_trace"]

REQUIRED = ("time_s", "requests_per_s", "charging")
OPTIONAL = ("ambient_c", "battery_percent")
_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


@dataclass(frozen=True)
class TracePoint:
    time_s: float
    requests_per_s: float
    charging: bool
    ambient_c: float | None = None
    battery_percent: float | None = None


@dataclass(frozen=True)
class Trace:
    """Rows of a usage trace in time order; `synthetic` marks made-up traces."""

    points: tuple[TracePoint, ...]
    synthetic: bool = False

    def __post_init__(self) -> None:
        if not self.points:
            raise ConfigError("a trace needs at least one row")
        for i in range(1, len(self.points)):
            if not self.points[i].time_s > self.points[i - 1].time_s:
                raise ConfigError(
                    f"trace row {i}: time_s {self.points[i].time_s:g} is not after "
                    f"{self.points[i - 1].time_s:g}; rows must be at increasing time"
                )

    @property
    def duration_s(self) -> float:
        return self.points[-1].time_s - self.points[0].time_s

    def at(self, time_s: float) -> TracePoint:
        """The row in force at `time_s` (step-wise; before the first row, the first row)."""
        i = bisect_right(self.points, time_s, key=lambda p: p.time_s)
        return self.points[max(0, i - 1)]

    def describe(self) -> str:
        kind = "synthetic" if self.synthetic else "recorded"
        return f"{kind} trace: {len(self.points)} rows over {self.duration_s / 3600:.2f} h"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        columns = list(REQUIRED) + [
            c for c in OPTIONAL if any(getattr(p, c) is not None for p in self.points)
        ]
        lines = ["# synthetic trace: made up, not measured"] if self.synthetic else []
        lines.append(",".join(columns))
        for p in self.points:
            cells = [_cell(getattr(p, c)) for c in columns]
            lines.append(",".join(cells))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"no trace file at {path}") from None
        synthetic, header, points = False, None, []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if line.startswith("#"):
                synthetic = synthetic or line[1:].strip().lower().startswith("synthetic")
            elif line and header is None:
                header = _header(path, number, line)
            elif line:
                points.append(_row(path, number, header, line, points))
        if not points:
            raise ConfigError(f"{path} has no data rows; see the trace format in the docs")
        return cls(tuple(points), synthetic=synthetic)


def _cell(value: float | bool | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if isinstance(value, bool) else repr(float(value))


def _header(path: Path, number: int, line: str) -> list[str]:
    columns = [c.strip() for c in line.split(",")]
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if missing or unknown or len(set(columns)) != len(columns):
        raise ConfigError(
            f"{path} line {number}: header {line!r} is not a trace header (missing: "
            f"{missing or 'none'}, unknown: {unknown or 'none'}); expected "
            f"{','.join(REQUIRED)}[,{'][,'.join(OPTIONAL)}] with no repeats"
        )
    return columns


def _row(path: Path, number: int, header: list[str] | None, line: str, before: list) -> TracePoint:
    where = f"{path} line {number}"
    cells = [c.strip() for c in line.split(",")]
    if header is None or len(cells) != len(header):
        raise ConfigError(f"{where}: {len(cells)} cells, but the header has {len(header or [])}")
    values: dict[str, float | bool | None] = {}
    for column, cell in zip(header, cells, strict=True):
        values[column] = _value(where, column, cell)
    point = TracePoint(**values)  # type: ignore[arg-type]
    if before and not point.time_s > before[-1].time_s:
        raise ConfigError(
            f"{where}: time_s {point.time_s:g} is not after the previous row's "
            f"{before[-1].time_s:g}; rows must be at increasing time"
        )
    return point


def _value(where: str, column: str, cell: str) -> float | bool | None:
    if column == "charging":
        if cell.lower() not in _BOOLS:
            raise ConfigError(f"{where}: charging {cell!r} is not 1/0, true/false or yes/no")
        return _BOOLS[cell.lower()]
    if cell == "" and column in OPTIONAL:
        return None
    try:
        x = float(cell)
    except ValueError:
        raise ConfigError(f"{where}: {column} {cell!r} is not a number") from None
    bad = not math.isfinite(x) or (column != "time_s" and x < 0)
    if bad or (column == "battery_percent" and x > 100):
        raise ConfigError(f"{where}: {column} {cell!r} is out of range")
    return x


def _day_load(hour: float) -> tuple[float, bool]:
    """Requests per second and charging at `hour` of a made-up phone day."""
    if hour < 7.0 or hour >= 23.0:
        return 0.02, True  # overnight on the charger: background work only
    if hour < 9.0:
        return 2.0, False  # morning burst: commute
    if 12.0 <= hour < 13.0:
        return 1.5, False  # lunch
    if 18.0 <= hour < 22.0:
        return 3.0, False  # evening burst
    return 0.4, False  # daytime: occasional use, unplugged


def day_trace(hours: float = 24.0, step_s: float = 600.0, seed: int = 0) -> Trace:
    """A SYNTHETIC day of a phone-like device from midnight, one row per `step_s`: charging
    overnight at low load, morning/lunch/evening bursts unplugged, ambient warmest at 14:00.
    Load carries a seeded ±30% jitter. Made up for demos and tests, never a measurement."""
    if not hours > 0 or not step_s > 0:
        raise ConfigError(f"hours and step_s must be > 0, got {hours} and {step_s}")
    rng = random.Random(seed)
    points = []
    for k in range(int(hours * 3600 / step_s) + 1):
        t = k * step_s
        hour = (t / 3600.0) % 24.0
        rate, charging = _day_load(hour)
        ambient = 22.0 + 4.0 * math.cos((hour - 14.0) / 24.0 * 2 * math.pi)
        jitter = rng.uniform(0.7, 1.3)
        points.append(TracePoint(t, round(rate * jitter, 4), charging, round(ambient, 2)))
    return Trace(tuple(points), synthetic=True)


class ReplayProbe:
    """Replays a trace's battery_percent and charging as a battery probe, for testing policies
    against recorded battery curves. `read()` uses `clock` (default: seconds since the probe
    was made, from the trace's start) unless given a time; states it makes are simulated."""

    def __init__(self, trace: Trace, clock: Callable[[], float] | None = None):
        missing = [p.time_s for p in trace.points if p.battery_percent is None]
        if missing:
            raise ConfigError(
                f"the trace has no battery_percent at time_s {missing[0]:g}; ReplayProbe "
                "replays recorded battery curves, so every row needs one"
            )
        self.trace = trace
        if clock is None:
            start, origin = time.monotonic(), trace.points[0].time_s
            clock = lambda: origin + time.monotonic() - start  # noqa: E731
        self.clock = clock

    def read(self, time_s: float | None = None) -> BatteryState:
        p = self.trace.at(self.clock() if time_s is None else time_s)
        return BatteryState(
            percent=float(p.battery_percent), charging=p.charging, power_w=None, energy_wh=None
        )

    def state(self, time_s: float | None = None) -> DeviceState:
        t = self.clock() if time_s is None else time_s
        b = self.read(t)
        return DeviceState(battery_percent=b.percent, charging=b.charging, time_s=t, simulated=True)

    def __repr__(self) -> str:
        return f"ReplayProbe(simulated, replaying a {self.trace.describe()})"
