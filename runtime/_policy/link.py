"""The link model of offloading: round-trip time and bandwidth, learned from the client's own
transfers (EWMA), with the spread of its predictions (for latency budgets at a quantile) and
the detection of a changed link (another network)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["LinkEstimate"]

SMALL = 2048  # bytes: a transfer this small measures the round trip, not the bandwidth


@dataclass
class LinkEstimate:
    """Round-trip time and bandwidth of the link, exponentially weighted over transfers
    (`alpha` per new sample); `dev_s`: EW mean absolute error of the prediction before each
    transfer. A sample far from the estimate three times running is taken as a change of link
    (another network): the estimate restarts from it."""

    alpha: float = 0.3
    rtt_s: float | None = None  # time of a request with (almost) no bytes
    bandwidth_bps: float | None = None  # bytes per second, both ways together
    dev_s: float = 0.0
    samples: int = 0
    changes: int = 0
    _far: int = field(default=0, repr=False)

    def add(self, seconds: float, nbytes: int) -> None:
        """One transfer of `nbytes` (request and answer) that took `seconds` in all, server
        compute excluded."""
        predicted = self.seconds_for(nbytes)
        if predicted is not None:
            self.dev_s = _ewma(self.dev_s, abs(seconds - predicted), self.alpha)
        if self.rtt_s is None or nbytes < SMALL:
            self.rtt_s = _ewma(self.rtt_s, seconds, self.alpha)
        payload_s = max(seconds - (self.rtt_s or 0.0), 1e-6)
        if nbytes >= SMALL:
            rate = nbytes / payload_s
            if self.bandwidth_bps is not None and not 1 / 3 < rate / self.bandwidth_bps < 3:
                self._far += 1
                if self._far >= 3:  # a new link: forget the old one
                    self.bandwidth_bps, self._far = None, 0
                    self.changes += 1
            else:
                self._far = 0
            self.bandwidth_bps = _ewma(self.bandwidth_bps, rate, self.alpha)
        self.samples += 1

    @property
    def known(self) -> bool:
        return self.rtt_s is not None

    def seconds_for(self, nbytes: float) -> float | None:
        """Expected time to send and answer `nbytes` (None before any measurement)."""
        if self.rtt_s is None:
            return None
        return self.rtt_s + (nbytes / self.bandwidth_bps if self.bandwidth_bps else 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The estimate's public fields (RTT, bandwidth, spread, sample and change counts)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def describe(self) -> str:
        """The link in words, for explanations."""
        if self.rtt_s is None:
            return "link not measured yet"
        bw = (
            "bandwidth unknown"
            if not self.bandwidth_bps
            else (f"{self.bandwidth_bps * 8 / 1e6:.3g} Mbit/s")
        )
        return (
            f"link: RTT {self.rtt_s * 1e3:.3g} ms, {bw} (EWMA of {self.samples} transfers, "
            f"error ±{self.dev_s * 1e3:.2g} ms)"
        )


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else (1 - alpha) * old + alpha * new
