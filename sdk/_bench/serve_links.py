"""The link sweep of `ponder bench serve`: the device reaches `ponder serve` through a
`LinkShaper` on loopback (added round-trip time, a bandwidth cap each way), and answers the
same test images always locally, always offloaded (at the most accurate offload point), and as
an `OffloadPolicy` under a latency budget decides — each with a fresh link estimate. Every
figure is measured end to end on this machine; only the link is shaped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ponder._bench.shaper import LinkShaper

__all__ = ["LINKS", "link_sweep", "one_by_one"]

# (Mbit/s, RTT ms): a slow cellular uplink to a fast LAN
LINKS = ((1, 5), (1, 20), (1, 100), (10, 5), (10, 20), (10, 100), (100, 5), (100, 20), (100, 100))
STRATEGIES = ("local", "offload", "policy")


def link_sweep(
    bundle: Any,
    url_port: int,
    x: np.ndarray,
    y: np.ndarray,
    *,
    links: Sequence[tuple[float, float]] = LINKS,
    requests: int = 30,
    budget_ms: float = 50.0,
    token: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Per link and strategy: accuracy, p50/p99 latency, share offloaded, bytes a request,
    and (policy) what it chose. `url_port`: the port `ponder serve` listens on."""
    from ponder.runtime import Offloader, PolicySpec

    rows = []
    for mbit, rtt_ms in links:
        with LinkShaper(url_port, rtt_s=rtt_ms / 1e3, bytes_per_s=mbit * 1e6 / 8) as shaper:
            for strategy in STRATEGIES:
                device = Offloader(bundle, shaper.url, token=token, timeout_s=10.0)
                try:
                    best = max(device.split.offload_points,
                               key=lambda p: (p.accuracy or 0.0, -p.payload_bytes))  # fmt: skip
                    policy = None
                    if strategy == "policy":
                        policy = device.policy(PolicySpec.simple(latency_ms=budget_ms))
                    run = one_by_one(device, x, y, requests, policy=policy,
                                     offload=strategy != "local", keep=best.keep,
                                     codec=best.codec)  # fmt: skip
                finally:
                    device.close()
                row = {"mbit_s": mbit, "rtt_ms": rtt_ms, "strategy": strategy,
                       "point": best.name if strategy == "offload" else None, **run}  # fmt: skip
                rows.append(row)
                if progress:
                    echo(f"  {mbit:g} Mbit/s, RTT {rtt_ms:g} ms, {strategy}: p50 "
                         f"{row['p50_ms']:.1f} ms, accuracy {row['accuracy']:.2%}, "
                         f"{row['offloaded']:.0%} offloaded")  # fmt: skip
    return {"budget_ms": budget_ms, "requests": requests, "rows": rows}


def one_by_one(
    device: Any, x: np.ndarray, y: np.ndarray, requests: int, *, policy: Any = None,
    offload: bool = True, keep: float = 1.0, codec: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`requests` single images in turn through an `Offloader` (under `policy`, or offloaded
    at `keep` and `codec`, or local): what the answers cost and scored, where they came from,
    what the policy chose and why it chose the last one."""
    ms, right, sent, sources, chosen, last = [], 0, 0, Counter(), Counter(), None
    for i in range(requests):
        j = i % len(x)
        r = device.run({"x": x[j : j + 1]}, keep=keep, codec=codec, offload=offload,
                       policy=policy)  # fmt: skip
        ms.append(r.seconds * 1e3)
        right += int(r.prediction[0] == y[j])
        sent += r.bytes_sent
        sources[r.source] += 1
        if r.decision is not None:
            chosen[r.decision.point.name + (" (probe)" if r.decision.probe else "")] += 1
        last = r
    return {
        "requests": requests, "accuracy": right / requests,
        "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
        "offloaded": sources["cloud"] / requests, "bytes_per_request": sent / requests,
        "sources": dict(sources), "chosen": dict(chosen),
        "explain": [] if last.decision is None else last.decision.reasons,
    }  # fmt: skip
