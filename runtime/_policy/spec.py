"""The declarative policy file: budgets per request (latency SLO, energy, accuracy floor) that
depend on battery, charging and temperature, hysteresis settings, and energy pacing over time.
TOML or JSON:

```toml
# ponder policy: the first [[rule]] whose `when` holds decides; [default] otherwise
latency_quantile = 0.99   # share of requests a latency budget must hold for (1.0: every one)

[hysteresis]
battery_band = 2          # a battery rule stays active until the battery is 2 points past its edge
accuracy_margin = 0.005   # switch to a more accurate point only for more than +0.5 points

[pacing]                  # "do not use more than 3% of the battery an hour", under every rule
battery_percent = 3       # share of the battery inference may spend per window
window_s = 3600           # the window, seconds
battery_wh = 15           # the battery's capacity: turns the share into energy

[default]
latency_ms = 50           # latency per request (an SLO, at latency_quantile)

[[rule]]
name = "plenty of battery"
when = { battery_above = 50 }
latency_ms = 30

[[rule]]
name = "low battery"
when = { battery_below = 20, charging = false }
energy_fraction = 0.5     # mean energy per inference at most half the full model's
```
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ponder._core.errors import ConfigError

__all__ = ["EnergyPacing", "PolicyRule", "PolicySpec", "load_policy"]

POLICY_FORMAT = "ponder-policy"
POLICY_VERSION = 1
CONDITIONS = ("battery_above", "battery_below", "charging", "temperature_above")
BUDGETS = ("latency_ms", "energy_mj", "energy_fraction", "min_accuracy")
HYSTERESIS = ("battery_band", "temperature_band", "accuracy_margin", "cost_margin", "min_requests")
PACING = ("battery_percent", "window_s", "battery_wh")
MJ_PER_WH = 3.6e6


def _unknown(where: str, keys: Any, allowed: tuple[str, ...]) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))}){hint}"
            )


def _number(
    where: str, name: str, value: Any, lo: float, hi: float = math.inf, *, lo_open: bool = False
) -> None:
    """None passes; otherwise value must be a real number in [lo, hi] ((lo, hi] if lo_open)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
    if value < lo or (lo_open and value == lo) or value > hi:
        low = f"({lo:g}" if lo_open else f"[{lo:g}"
        raise ConfigError(f"{where}: {name} = {value!r} is outside {low}, {hi:g}]")


@dataclass(frozen=True)
class PolicyRule:
    """Budgets that apply while every given condition holds (all None: `default` only).

    Conditions: battery_above/battery_below (percent, strict), charging, temperature_above
    (°C). A condition on something the device does not report does not hold.
    Budgets: latency_ms (worst case per request), energy_mj (mean per inference),
    energy_fraction (of the full model's mean energy; with energy_mj the tighter applies),
    min_accuracy (a floor: the policy then picks the least energy among points above it).
    """

    name: str = "default"
    battery_above: float | None = None
    battery_below: float | None = None
    charging: bool | None = None
    temperature_above: float | None = None
    latency_ms: float | None = None
    energy_mj: float | None = None
    energy_fraction: float | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"policy rule name must be a non-empty string, got {self.name!r}")
        where = f"policy rule {self.name!r}"
        _number(where, "battery_above", self.battery_above, 0, 100)
        _number(where, "battery_below", self.battery_below, 0, 100)
        _number(where, "temperature_above", self.temperature_above, -273.15)
        _number(where, "latency_ms", self.latency_ms, 0, lo_open=True)
        _number(where, "energy_mj", self.energy_mj, 0, lo_open=True)
        _number(where, "energy_fraction", self.energy_fraction, 0, 1, lo_open=True)
        _number(where, "min_accuracy", self.min_accuracy, 0, 1)
        if self.charging is not None and not isinstance(self.charging, bool):
            raise ConfigError(f"{where}: charging must be true or false, got {self.charging!r}")
        lo, hi = self.battery_above, self.battery_below
        if lo is not None and hi is not None and lo >= hi:
            raise ConfigError(
                f"{where}: battery_above = {lo:g} and battery_below = {hi:g} never both hold; "
                "for a band write battery_above < battery_below"
            )

    def holds(
        self,
        battery: float | None,
        charging: bool | None,
        temperature: float | None,
        battery_slack: float = 0.0,
        temp_slack: float = 0.0,
    ) -> bool:
        """Whether every condition holds; an edge moves by its slack (the band) outward."""
        if self.battery_above is not None and (
            battery is None or battery <= self.battery_above - battery_slack
        ):
            return False
        if self.battery_below is not None and (
            battery is None or battery >= self.battery_below + battery_slack
        ):
            return False
        if self.charging is not None and charging is not self.charging:
            return False
        return self.temperature_above is None or (
            temperature is not None and temperature > self.temperature_above - temp_slack
        )

    def energy_limit(self, full_energy_mj: float | None) -> float:
        """The energy cap per inference in mJ (the tighter of the two forms), inf if none."""
        limit = math.inf if self.energy_mj is None else self.energy_mj
        if self.energy_fraction is not None and full_energy_mj is not None:
            limit = min(limit, self.energy_fraction * full_energy_mj)
        return limit

    @property
    def conditions(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CONDITIONS if getattr(self, k) is not None}

    @property
    def needs_energy(self) -> bool:
        return self.energy_mj is not None or self.energy_fraction is not None

    @classmethod
    def from_dict(cls, d: dict[str, Any], default_name: str = "default") -> PolicyRule:
        if not isinstance(d, dict):
            raise ConfigError(f"policy {default_name} must be a table of keys, got {d!r}")
        name = d.get("name", default_name)
        where = f"policy rule {name!r}"
        _unknown(where, d, ("name", "when", *BUDGETS))
        when = d.get("when", {})
        if not isinstance(when, dict):
            raise ConfigError(f"{where}: `when` must be a table like {{ battery_below = 20 }}")
        _unknown(f"{where}, `when`", when, CONDITIONS)
        return cls(name=name, **when, **{k: d[k] for k in BUDGETS if k in d})

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.conditions:
            d["when"] = self.conditions
        d.update({k: getattr(self, k) for k in BUDGETS if getattr(self, k) is not None})
        return d


@dataclass(frozen=True)
class EnergyPacing:
    """At most `battery_percent` of a `battery_wh` battery spent on inference per window of
    `window_s` seconds ("3% of the battery an hour"), whichever rule holds: the policy's energy
    budget per inference becomes the window's unspent energy over the requests expected in the
    rest of the window (the tighter of that and the rule's own). Counts inference energy (what
    the policy observes), not the device's idle draw, and none while the device is charging.
    """

    battery_percent: float
    window_s: float = 3600.0
    battery_wh: float | None = None

    def __post_init__(self) -> None:
        where = "policy [pacing]"
        _number(where, "battery_percent", self.battery_percent, 0, 100, lo_open=True)
        if self.battery_wh is None:
            raise ConfigError(
                f"{where}: battery_wh is missing: the battery's capacity in Wh is what turns "
                f"{self.battery_percent:g}% of the battery into energy (1 Wh = 3600 J); add the "
                "device's rated capacity, e.g. battery_wh = 15"
            )
        for name in ("window_s", "battery_wh"):
            value = getattr(self, name)
            _number(where, name, value, 0, lo_open=True)
            if math.isinf(value):
                raise ConfigError(f"{where}: {name} must be finite, got {value!r}")

    @property
    def budget_mj(self) -> float:
        """The energy a window may spend, mJ (1 Wh = 3.6e6 mJ)."""
        return self.battery_percent / 100 * self.battery_wh * MJ_PER_WH

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnergyPacing:
        if not isinstance(d, dict):
            raise ConfigError(
                "policy: [pacing] must be a table like { battery_percent = 3, window_s = 3600, "
                "battery_wh = 15 }"
            )
        _unknown("policy [pacing]", d, PACING)
        if "battery_percent" not in d:
            raise ConfigError(
                "policy [pacing]: battery_percent is missing: the share of the battery inference "
                "may spend per window, e.g. battery_percent = 3"
            )
        return cls(**d)

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PACING}


@dataclass(frozen=True)
class PolicySpec:
    """A whole policy: `rules` tried in order (the first that holds decides), `default` when
    none does, and the hysteresis settings that keep the choice from flapping.

    battery_band / temperature_band: an active rule stays active until the battery (°C) is this
    far past its edge. accuracy_margin: move to a more accurate point only when it gains more
    than this; cost_margin: under an accuracy floor, move to a cheaper point only when it saves
    more than this fraction of energy; min_requests: decisions to stay on a point before such a
    move. A point that breaks a budget is always left at once. pacing: an energy budget per
    time window over every rule (None: none).
    """

    default: PolicyRule = field(default_factory=PolicyRule)
    rules: tuple[PolicyRule, ...] = ()
    battery_band: float = 2.0
    temperature_band: float = 2.0
    accuracy_margin: float = 0.005
    cost_margin: float = 0.05
    min_requests: int = 0
    latency_quantile: float = 0.99
    pacing: EnergyPacing | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if self.pacing is not None and not isinstance(self.pacing, EnergyPacing):
            raise ConfigError(
                f"policy: pacing must be an EnergyPacing or None, got {type(self.pacing).__name__}"
            )
        q = self.latency_quantile
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
            raise ConfigError(
                f"policy: latency_quantile must be in (0, 1] (0.99: the budget holds for 99% "
                f"of requests; 1: for every request), got {q!r}"
            )
        _number("policy hysteresis", "battery_band", self.battery_band, 0, 100)
        _number("policy hysteresis", "temperature_band", self.temperature_band, 0)
        _number("policy hysteresis", "accuracy_margin", self.accuracy_margin, 0, 1)
        _number("policy hysteresis", "cost_margin", self.cost_margin, 0, 1)
        n = self.min_requests
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(
                f"policy hysteresis: min_requests must be an int >= 0, got {self.min_requests!r}"
            )
        if self.default.conditions:
            raise ConfigError(
                f"policy [default] cannot have conditions ({self.default.conditions}); move them to a [[rule]]"
            )
        names = [r.name for r in self.rules]
        for r in self.rules:
            if not r.conditions:
                raise ConfigError(
                    f"policy rule {r.name!r} has no `when` conditions, so every rule after it "
                    "would be unreachable; put its budgets in [default] or add a condition"
                )
            if names.count(r.name) > 1 or r.name == self.default.name:
                raise ConfigError(
                    f"policy rule name {r.name!r} is used twice; names must be unique"
                )

    @property
    def needs_energy(self) -> bool:
        rules = (self.default, *self.rules)
        return self.pacing is not None or any(r.needs_energy for r in rules)

    @classmethod
    def simple(cls, latency_ms: float | None = None, energy_mj: float | None = None) -> PolicySpec:
        """One budget for every state (the CLI's --latency-ms / --energy-mj)."""
        return cls(default=PolicyRule("default", latency_ms=latency_ms, energy_mj=energy_mj))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicySpec:
        if not isinstance(d, dict):
            raise ConfigError(f"a policy must be a table of keys, got {type(d).__name__}")
        known = ("format", "version", "latency_quantile", "hysteresis", "pacing", "default", "rule")
        _unknown("policy", d, known)
        if d.get("format", POLICY_FORMAT) != POLICY_FORMAT or d.get("version", 1) != POLICY_VERSION:
            raise ConfigError(
                f"not a ponder policy of version {POLICY_VERSION} (format {d.get('format')!r}, "
                f"version {d.get('version')!r}); drop those keys or set format = "
                f'"{POLICY_FORMAT}", version = {POLICY_VERSION}'
            )
        hyst = d.get("hysteresis", {})
        if not isinstance(hyst, dict):
            raise ConfigError("policy: [hysteresis] must be a table like { battery_band = 2 }")
        _unknown("policy [hysteresis]", hyst, HYSTERESIS)
        rules = d.get("rule", [])
        if not isinstance(rules, list):
            raise ConfigError("policy: `rule` must be a list of tables (write [[rule]] in TOML)")
        pacing = d.get("pacing")
        return cls(
            default=PolicyRule.from_dict(d.get("default", {})),
            rules=tuple(PolicyRule.from_dict(r, f"rule {i}") for i, r in enumerate(rules)),
            latency_quantile=d.get("latency_quantile", 0.99),
            pacing=None if pacing is None else EnergyPacing.from_dict(pacing),
            **hyst,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, and what from_dict reads back."""
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "latency_quantile": self.latency_quantile,
            "hysteresis": {
                f.name: getattr(self, f.name) for f in fields(self) if f.name in HYSTERESIS
            },
            **({} if self.pacing is None else {"pacing": self.pacing.to_dict()}),
            "default": self.default.to_dict(),
            "rule": [r.to_dict() for r in self.rules],
        }


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ConfigError(
            f"{path}: reading TOML needs Python 3.11 or newer; write the policy as JSON "
            "(same keys, `rule` as a list) and name it .json"
        ) from None
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def load_policy(path: str | Path) -> PolicySpec:
    """Read a policy file (.toml or .json); every error names the file and what to fix."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: a policy file must end in .toml or .json")
    if not path.is_file():
        raise ConfigError(f"no policy file at {path}; check the path")
    if path.suffix == ".toml":
        d = _read_toml(path)
    else:
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    try:
        return PolicySpec.from_dict(d)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None
