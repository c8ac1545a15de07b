"""Local or cloud, request by request: `OffloadPolicy` puts a split bundle's offload points
(keep ratio × codec, each with the accuracy and payload size measured at export) beside the
local policy's choice, and predicts what offloading costs with the link model:

    latency = device half (EWMA of its measured time, slowed by throttling)
              + link (RTT + bytes / bandwidth, learned from the client's transfers)
              + server compute (as the server reports it)
    energy  = device half × device power + radio power × (link + server time)

The budgets are the local policy's (latency at its quantile, energy per inference, accuracy
floor, by battery rule) and so is the choice: the most accurate candidate within them, or,
under a floor, the cheapest above it; offloading must win by more than the policy's margins
to replace the other (hysteresis). The link is explored: while it is unmeasured, or has not
been used for `probe_every` requests, one request goes to the cloud at the smallest payload
to measure it. A failed offload backs off (doubling, up to `max_backoff_s`) before the next
try; the caller answers that request locally (see `Offloader`). `OffloadDecision.explain()`
says why, in a few lines.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder._core.checks import positive
from ponder._core.errors import ConfigError
from ponder.runtime._policy.cost_model import CostModel
from ponder.runtime._policy.decision import Decision
from ponder.runtime._policy.link import LinkEstimate
from ponder.runtime._policy.policy import Policy

__all__ = ["OffloadDecision", "OffloadPoint", "OffloadPolicy"]

LOCAL, CLOUD = "local", "cloud"
ANSWER_BYTES = 300  # an answer's size (JSON header and logits) before one is measured


@dataclass(frozen=True)
class OffloadPoint:
    """Offloading at one keep ratio and codec: `accuracy` of the split model there and the
    mean `payload_bytes` per sample, both measured on the calibration data at export."""

    keep: float
    codec: str
    accuracy: float | None
    payload_bytes: float

    @property
    def name(self) -> str:
        return f"cloud keep {self.keep:g} {self.codec}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OffloadPoint:
        try:
            return cls(
                float(d["keep"]), str(d["codec"]), d.get("accuracy"), float(d["payload_bytes"])
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                f"offload point {d!r} is malformed ({e}); re-export the bundle"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {"keep": self.keep, "codec": self.codec, "accuracy": self.accuracy,
                "payload_bytes": self.payload_bytes}  # fmt: skip


@dataclass(frozen=True)
class CloudPrediction:
    """What offloading at one point is predicted to cost a request (latency in real ms)."""

    point: OffloadPoint
    edge_ms: float
    link_ms: float
    server_ms: float
    worst_ms: float
    energy_mj: float | None
    breaks: str | None  # the budget it breaks, in words; None: within every budget

    @property
    def latency_ms(self) -> float:
        return self.edge_ms + self.link_ms + self.server_ms


@dataclass(frozen=True)
class OffloadDecision:
    """Where the next request is answered: `target` "local" (run `local.point` on the device)
    or "cloud" (offload at `point`); `probe`: offloaded to measure the link, not because it was
    predicted better. `local` is the local policy's decision, `cloud` the predictions for each
    offload point (empty while the link is unknown or the service backs off)."""

    target: str
    point: Any  # OperatingPoint (local) or OffloadPoint (cloud)
    local: Decision
    cloud: tuple[CloudPrediction, ...]
    probe: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def offload(self) -> bool:
        return self.target == CLOUD

    def explain(self) -> str:
        """Why this target: the local policy's reasons, the link, and the comparison."""
        return "\n".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        chosen = self.point.to_dict() if self.offload else self.local.to_dict()
        return {"target": self.target, "point": self.point.name, "probe": self.probe,
                "chosen": chosen, "reasons": list(self.reasons)}  # fmt: skip


class OffloadPolicy:
    """Chooses between `local` (the device's Policy over the local bundle's points) and
    offloading at one of `points`, with the link model `link` (shared with the client that
    feeds it). power_w: the device's draw while the device half runs (default: the local cost
    model's); radio_power_w: its draw while a request is on the link or waiting for the server
    (an assumption, 1 W by default: say yours); probe_every: requests without an offload after
    which one is sent to re-measure the link; backoff_s, max_backoff_s: the wait after a failed
    offload, doubled per failure in a row; clock: seconds (time.monotonic)."""

    def __init__(
        self,
        local: Policy,
        points: Sequence[OffloadPoint],
        link: LinkEstimate | None = None,
        *,
        power_w: float | None = None,
        radio_power_w: float = 1.0,
        probe_every: int = 100,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not points:
            raise ConfigError(
                "an OffloadPolicy needs offload points (keep × codec with accuracy and payload "
                "bytes): export the split bundle from a checkpoint with labelled data "
                "(`ponder export CKPT --split K`) or give them"
            )
        positive(radio_power_w, "radio_power_w")
        if probe_every < 1:
            raise ConfigError(f"probe_every must be >= 1, got {probe_every}")
        self.local, self.points = local, list(points)
        self.link = LinkEstimate() if link is None else link
        self.power_w = local.cost_model.power_w if power_w is None else power_w
        self.radio_power_w, self.probe_every = radio_power_w, probe_every
        self.backoff_s, self.max_backoff_s, self.clock = backoff_s, max_backoff_s, clock
        # the device half: one "stage" of time per sample, learned from observe_edge()
        self.edge = CostModel(
            1, stage_flops=[1.0], power_w=self.power_w, alpha=local.cost_model.alpha
        )
        self.server_ms: float | None = None
        self.answer_bytes = float(ANSWER_BYTES)
        self._since_offload = 0  # requests since the last offload (probe or chosen)
        self._failures, self._retry_at, self._last_error = 0, -math.inf, None
        self._target: str | None = None
        self._speed, self._has_energy = 1.0, False

    # --- what the Offloader reports back ---

    def observe_edge(self, ms: float, rows: int = 1, energy_mj: float | None = None) -> None:
        """The device half took `ms` for `rows` samples (payloads included); its energy
        (measured, else ms × power_w) counts against the local policy's pacing window."""
        self.edge.observe(0, ms, energy_mj, batch=rows, speed=self._speed)
        if energy_mj is None and self.power_w is not None:
            energy_mj = ms * self.power_w
        self.local.spend(energy_mj or 0.0, rows)

    def observe_offload(
        self, server_ms: float | None, answer_bytes: int, rows: int, seconds: float = 0.0
    ) -> None:
        """An offload succeeded (the client has already fed the link): it took `seconds` on
        the link and in the server, which the radio pays (paced with the local policy)."""
        self.local.spend(self.radio_power_w * seconds * 1e3, 0)
        if server_ms is not None:
            per_row = server_ms / max(rows, 1)  # the server batches: its time is shared
            self.server_ms = (
                per_row if self.server_ms is None else 0.8 * self.server_ms + 0.2 * per_row
            )
        self.answer_bytes = 0.8 * self.answer_bytes + 0.2 * answer_bytes / max(rows, 1)
        self._failures, self._last_error = 0, None

    def failed(self, error: str) -> None:
        """An offload failed (it was answered locally): wait before the next try."""
        self._failures += 1
        wait = min(self.backoff_s * 2 ** (self._failures - 1), self.max_backoff_s)
        self._retry_at, self._last_error = self.clock() + wait, error

    # --- deciding ---

    def decide(self, state: Any = None) -> OffloadDecision:
        """Local or cloud for the next request under device `state` (a DeviceState)."""
        local = self.local.decide(state)
        why = local.why
        speed = self._speed = 1.0 if state is None else state.speed
        self._has_energy = why.snap.has_energy
        lines = list(local.reasons)
        now = self.clock()
        if now < self._retry_at:
            lines.append(
                f"not offloading: the last offload failed ({self._last_error}); "
                f"{self._failures} failure(s) in a row, next try in {self._retry_at - now:.3g} s"
            )
            return self._done(LOCAL, local.point, local, (), False, lines)
        self._since_offload += 1
        if why.how == "unknown":  # the local choice cannot be weighed before it is timed
            lines.append(
                "answered locally: the local model's stage times are not measured yet (this "
                "request measures them)"
            )
            return self._done(LOCAL, local.point, local, (), False, lines)
        if not self.link.known or not self.edge.known:
            what = "the link" if not self.link.known else "the device half's time"
            return self._probe(local, lines, f"{what} has not been measured yet")
        if self._since_offload > self.probe_every:
            return self._probe(
                local, lines, f"the link has not been used for {self._since_offload - 1} requests"
            )
        lines.append(self.link.describe())
        (edge,), (tail,) = self.edge.stage_latency_ms(), self.edge.stage_tail_ms()
        cloud = tuple(self._predict(p, local, speed, edge, tail) for p in self.points)
        best = self._best(local, cloud)
        if best is None:
            out = [c for c in cloud if c.breaks]
            worst = min(out, key=lambda c: c.worst_ms) if out else None
            lines.append(
                f"answered locally with {local.point.name!r}: no offload point is within the "
                f"budgets" + (f" (nearest, {worst.point.name}: {worst.breaks})" if worst else "")
            )
            return self._done(LOCAL, local.point, local, cloud, False, lines)
        chosen, line = self._against_local(local, best, why)
        lines.append(line)
        if chosen is None:
            return self._done(LOCAL, local.point, local, cloud, False, lines)
        return self._done(CLOUD, chosen.point, local, cloud, False, lines)

    def _probe(self, local: Decision, lines: list[str], why: str) -> OffloadDecision:
        smallest = min(self.points, key=lambda p: p.payload_bytes)
        lines.append(
            f"probe: {why}; offloading this request at the smallest payload "
            f"({smallest.name}, {smallest.payload_bytes:.0f} B) to measure it (answered locally "
            "if it fails)"
        )
        return self._done(CLOUD, smallest, local, (), True, lines)

    def _done(self, target, point, local, cloud, probe, lines) -> OffloadDecision:
        if target == CLOUD:
            self._since_offload = 0
        if not probe:  # a probe measures the link; hysteresis keeps to the last real choice
            self._target = target
        return OffloadDecision(target, point, local, cloud, probe, lines)

    def _predict(
        self, p: OffloadPoint, local: Decision, speed: float, edge: float, tail: float
    ) -> CloudPrediction:
        """edge, tail: the device half's mean and tail ms per sample at full clock."""
        edge_ms, edge_worst = edge / speed, tail / speed
        link_ms = self.link.seconds_for(p.payload_bytes + self.answer_bytes) * 1e3
        server_ms = self.server_ms or 0.0
        worst = edge_worst + link_ms + server_ms + self.edge.tail * self.link.dev_s * 1e3
        energy = None
        if self.power_w is not None:
            energy = edge * self.power_w + self.radio_power_w * (link_ms + server_ms)
        why, rule = local.why, local.why.rules[local.why.rule]
        _, en_lim, floor = why.limits
        breaks = None
        if rule.latency_ms is not None and worst > rule.latency_ms:
            breaks = f"predicted latency {worst:.3g} ms > {rule.latency_ms:.3g} ms"
        elif en_lim < math.inf and (energy is None or energy > en_lim):
            breaks = (
                "its energy is unknown (give power_w)" if energy is None
                else f"predicted energy {energy:.3g} mJ > {en_lim:.3g} mJ"
            )  # fmt: skip
        elif floor > -math.inf and (p.accuracy is None or p.accuracy < floor):
            breaks = f"expected accuracy {_acc(p.accuracy)} < floor {floor:g}"
        return CloudPrediction(p, edge_ms, link_ms, server_ms, worst, energy, breaks)

    def _cost(self, c: CloudPrediction) -> float:
        if self._has_energy and c.energy_mj is not None:
            return c.energy_mj
        return c.latency_ms

    def _best(self, local: Decision, cloud: tuple[CloudPrediction, ...]) -> CloudPrediction | None:
        """The best offload point within the budgets, by the local policy's criterion."""
        ok = [c for c in cloud if c.breaks is None]
        if not ok:
            return None
        if local.why.limits[2] > -math.inf:  # a floor: the cheapest above it
            return min(ok, key=lambda c: (self._cost(c), -(c.point.accuracy or 0.0)))
        return min(ok, key=lambda c: (-(c.point.accuracy or -math.inf), self._cost(c)))

    def _against_local(self, local: Decision, best: CloudPrediction, why: Any):
        """(the cloud prediction to offload with, or None to stay local; the line saying why)."""
        spec, floor = why.spec, why.limits[2]
        snap, i = why.snap, why.chosen
        acc_l = local.point.accuracy
        acc_c = best.point.accuracy
        offloading = self._target == CLOUD
        name_l, name_c = repr(local.point.name), best.point.name
        cloud_words = (
            f"{name_c} ({_acc(acc_c)}, {best.point.payload_bytes:.0f} B): predicted "
            f"{best.latency_ms:.3g} ms (device {best.edge_ms:.3g} + link {best.link_ms:.3g} + "
            f"server {best.server_ms:.3g}), {_fig(best.energy_mj, 'mJ')}"
        )
        if not local.feasible:
            return best, f"offloaded: {cloud_words}; no local point meets the budgets"
        if floor > -math.inf:  # the cheaper of the two, above the floor
            if not snap.known:
                local_cost = math.inf
            elif snap.has_energy:
                local_cost = snap.cost[i]
            else:  # at full clock in the snapshot
                local_cost = snap.mean_lat[i] / self._speed
            cost = self._cost(best)
            unit = "mJ" if snap.has_energy else "ms"
            margin = spec.cost_margin * (cost if offloading else local_cost)
            if (cost < local_cost - margin) if not offloading else (cost <= local_cost + margin):
                return best, (
                    f"offloaded: {cloud_words}; cheaper than local {name_l} at "
                    f"{local_cost:.3g} {unit}, both above the floor"
                )
            return None, (
                f"answered locally with {name_l} ({local_cost:.3g} {unit}): offloading "
                f"({cloud_words}) does not save more than cost_margin {spec.cost_margin:g}"
            )
        gain = (acc_c if acc_c is not None else -math.inf) - (
            acc_l if acc_l is not None else -math.inf
        )
        margin = spec.accuracy_margin + 1e-9  # accuracies are measured shares: no float ties
        if gain > margin or (offloading and gain >= -margin):
            kept = " (kept: within accuracy_margin of local)" if gain <= margin else ""
            return best, f"offloaded: {cloud_words}; local {name_l} expects {_acc(acc_l)}{kept}"
        return None, (
            f"answered locally with {name_l} ({_acc(acc_l)}): the best offload point, "
            f"{cloud_words}, gains {gain:+.4f} accuracy, not more than accuracy_margin {spec.accuracy_margin:g}"
        )


def _acc(a: float | None) -> str:
    return "accuracy unknown" if a is None else f"accuracy {a:.3f}"


def _fig(x: float | None, unit: str) -> str:
    return "energy unknown" if x is None else f"{x:.3g} {unit}"
