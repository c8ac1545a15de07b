"""Goals, tables, JSON and plot for `ponder bench runtime`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ponder._core.plots import pyplot, save_figure
from ponder._core.report import format_table, write_json

# The goals.
ACCURACY_SLACK = 0.01  # within 1 percentage point of the best point chosen with hindsight
DECIDE_US = 50.0  # decision overhead per request
ENGINE_OVERHEAD = 0.03  # engine against calling the backend directly


def add_goals(results: dict[str, Any]) -> None:
    """Mark each result with whether its goal is met, in place."""
    slo = results["slo"]
    for row in slo["rows"]:
        best = row["hindsight_accuracy"]
        row["within_goal_met"] = row["within"] >= slo["goal_within"]
        row["accuracy_goal_met"] = best is None or row["accuracy"] >= best - ACCURACY_SLACK
        row["decide_goal_met"] = row["decide_us_median"] <= DECIDE_US
    for key in ("overhead", "overhead_vit"):
        if key in results:
            o = results[key]
            o["goal_met"] = o["ratio"] - 1 <= ENGINE_OVERHEAD


def echo_tables(results: dict[str, Any], echo) -> None:
    cfg, slo = results["config"], results["slo"]
    echo(f"\n{cfg['model']}; {cfg['device']}")
    echo(
        f"latency SLO: {cfg['requests']} requests of batch 1 per budget; budgets from the "
        f"first stage ({slo['first_stage_ms']:.3f} ms) to the full model "
        f"({slo['full_ms']:.3f} ms), request latency as the caller sees it"
    )
    rows = [
        [
            f"{r['budget_ms']:.3f}",
            f"{r['within']:.2%}",
            f"{r['p99_ms']:.3f}",
            f"{r['accuracy']:.2%}",
            r["hindsight_point"] or "none meets 99%",
            "-" if r["hindsight_accuracy"] is None else f"{r['hindsight_accuracy']:.2%}",
            f"{r['decide_us_median']:.1f} / {r['decide_us_p99']:.1f}",
        ]
        for r in slo["rows"]
    ]
    echo(
        format_table(
            [
                "budget ms",
                "within",
                "p99 ms",
                "accuracy",
                "hindsight best point",
                "its accuracy",
                "decide us p50/p99",
            ],
            rows,
        )
    )
    o = results["overhead"]
    echo(
        f"engine overhead (batch 1, all {o['stages']} stages, {o['repeats']} interleaved "
        f"requests): engine {o['engine_ms']:.3f} ms vs direct stage calls {o['direct_ms']:.3f} "
        f"ms = {o['ratio']:.3f}x ({o['per_stage_us']:.1f} us per stage)"
    )
    if "overhead_vit" in results:
        v = results["overhead_vit"]
        echo(
            f"engine overhead on a ViT {v['sizes']['blocks']}x{v['sizes']['width']} bundle "
            f"(random weights, batch 1, {v['repeats']} interleaved requests): engine "
            f"{v['engine_ms']:.2f} ms vs direct {v['direct_ms']:.2f} ms = {v['ratio']:.3f}x"
        )
    t = results["throughput"]
    echo(
        f"batch {t['batch']} throughput at '{t['point']}': per-sample exits "
        f"{t['samples_per_s_adaptive']:.0f} samples/s vs full model "
        f"{t['samples_per_s_full']:.0f} samples/s: time {t['time_fraction']:.3f} of the full "
        f"model's at FLOPs {t['flops_fraction']:.3f} (exits per stage {t['exit_counts']})"
    )


def plot_runtime(path: Path, results: dict[str, Any]) -> Path:
    """Left: share within budget and accuracy per budget (policy vs hindsight). Right: batch
    time fraction beside FLOPs fraction."""
    fig, (a, b) = pyplot().subplots(1, 2, figsize=(10, 4.2))
    rows = results["slo"]["rows"]
    budgets = [r["budget_ms"] for r in rows]
    a.plot(budgets, [r["within"] for r in rows], marker="o", label="policy: share within budget")
    a.plot(budgets, [r["accuracy"] for r in rows], marker="s", label="policy: accuracy")
    a.plot(
        budgets,
        [r["hindsight_accuracy"] or 0 for r in rows],
        marker="^",
        ls="--",
        label="best fixed point (hindsight): accuracy",
    )
    a.axhline(results["slo"]["goal_within"], color="red", lw=1, ls=":", label="99% goal")
    low = min(min(r["within"], r["accuracy"], r["hindsight_accuracy"] or 1) for r in rows)
    a.set(xlabel="latency budget per request (ms)", ylim=(max(0.0, low - 0.03), 1.005))
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    t = results["throughput"]
    b.bar(["FLOPs", "time"], [t["flops_fraction"], t["time_fraction"]], color=["grey", "C0"])
    b.set(ylabel=f"fraction of the full model (batch {t['batch']})", ylim=(0, 1.05))
    b.grid(alpha=0.3, axis="y")
    cfg = results["config"]
    return save_figure(fig, path, f"runtime: {cfg['model']}, {cfg['backend']}")


def write_outputs(out: Path, results: dict[str, Any], echo) -> tuple[Path, Path]:
    add_goals(results)
    echo_tables(results, echo)
    paths = write_json(out / "runtime.json", results), plot_runtime(out / "runtime.png", results)
    echo(f"wrote {paths[0]} and {paths[1]}")
    return paths
