"""Goals, tables, JSON and plot for `ponder bench transformer`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ponder._core.plots import pyplot, save_figure
from ponder._core.report import format_table, write_json

# Time fraction may exceed the FLOPs fraction by this much (batch size -> points); batches not
# listed are measured and printed without a goal.
GAP_GOAL = {1: 0.05, 64: 0.03}
ALL_STAGES_GOAL = 1.03  # every stage run for every sample, against the whole model


def add_goals(results: dict[str, Any]) -> None:
    """Mark each timed point with its gap to the FLOPs fraction and whether the goal is met
    (judged on the paired time fraction), in place."""
    for timing in results["timing"]:
        for p in timing["points"]:
            p["gap"] = p["time_fraction_paired"] - p["flops_fraction"]
            if p["name"] == "always full":
                p["goal"] = f"<= {ALL_STAGES_GOAL:.2f}x"
                p["goal_met"] = p["time_fraction_paired"] <= ALL_STAGES_GOAL
            elif timing["batch"] in GAP_GOAL:
                p["goal"] = f"gap <= {GAP_GOAL[timing['batch']]:.2f}"
                p["goal_met"] = p["gap"] <= GAP_GOAL[timing["batch"]]
            else:
                p["goal"], p["goal_met"] = "-", None


def echo_tables(results: dict[str, Any], echo) -> None:
    cfg, m, flops = results["config"], results["machine"], results["flops"]
    echo(
        f"\n{cfg['description']}; {cfg['num_exits']} {cfg['style'].upper()} exits; "
        f"{cfg['samples']} test samples"
    )
    echo(
        f"{m['cpu']} ({m['cores']} cores); threads {m['threads']}; {cfg['repeats']} interleaved "
        f"rounds after {cfg['warmup']} warm-up"
    )
    echo(
        "FLOPs to the end of each stage / whole model: "
        + ", ".join(f"{f:.3f}" for f in flops["cumulative_fraction"])
        + f" (exit heads {flops['heads_share']:.1%} of the staged model)"
    )
    echo(
        "time fraction = the point's time / the whole model's over the same chunks (median of "
        "per-round ratios; the IQR beside it); FLOPs fraction from the exits taken"
    )
    rows = []
    for t in results["timing"]:
        for p in t["points"]:
            met = {True: "yes", False: "NO", None: "-"}[p["goal_met"]]
            low, high = p["time_fraction_spread"]
            rows.append(
                [
                    t["backend"],
                    t["batch"],
                    p["name"],
                    f"{p['accuracy']:.2%}",
                    "/".join(map(str, p["exit_counts"])),
                    f"{p['flops_fraction']:.3f}",
                    f"{p['time_fraction_paired']:.3f} [{low:.3f}, {high:.3f}]",
                    f"{100 * p['gap']:+.1f}",
                    f"{p['median_ms']:.1f}",
                    f"{p['goal']} {met}",
                ]
            )
    echo(
        format_table(
            [
                "backend",
                "batch",
                "point",
                "accuracy",
                "exits per stage",
                "FLOPs frac",
                "time frac [IQR]",
                "gap pts",
                "ms (all chunks)",
                "goal",
            ],
            rows,
        )
    )
    whole = [
        [
            t["backend"],
            t["batch"],
            f"{t['whole_median_ms']:.1f}",
            f"{t['whole_accuracy']:.2%}",
            f"{t['aa_ratio_paired']:.3f} [{t['aa_spread'][0]:.3f}, {t['aa_spread'][1]:.3f}]",
        ]
        for t in results["timing"]
    ]
    headers = ["backend", "batch", "whole model ms (all chunks)", "accuracy", "A/A ratio [IQR]"]
    echo(format_table(headers, whole))


def write_outputs(out: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    json_path = write_json(out / "transformer.json", results)
    return json_path, plot(results, out / "transformer.png")


def plot(results: dict[str, Any], path: Path) -> Path:
    """Time fraction against FLOPs fraction, one panel per backend, a series per batch size;
    the diagonal is time following FLOPs exactly."""
    plt = pyplot()
    backends = sorted({t["backend"] for t in results["timing"]})
    fig, axes = plt.subplots(1, len(backends), figsize=(5 * len(backends), 4.2), squeeze=False)
    for ax, backend in zip(axes[0], backends, strict=True):
        top = 1.1
        for t in (t for t in results["timing"] if t["backend"] == backend):
            f = [p["flops_fraction"] for p in t["points"]]
            tf = [p["time_fraction_paired"] for p in t["points"]]
            ax.plot(f, tf, "o-", label=f"batch {t['batch']}")
            top = max(top, *f, *tf)
        ax.plot([0, top], [0, top], "k:", lw=1, label="time = FLOPs")
        ax.set(
            title=backend,
            xlabel="FLOPs fraction (exits taken)",
            ylabel="time fraction of the whole model",
            xlim=(0, top * 1.02),
            ylim=(0, top * 1.02),
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    return save_figure(fig, path, results["config"]["description"])
