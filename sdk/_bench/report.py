"""Tables, JSON and plot for `ponder bench exits`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ponder._calibration.plots import plot_exits
from ponder._core.report import format_table, write_json

STYLES = ("sdn", "ztw")


def _pm(stat: dict[str, Any], pct: bool = True, i: int | None = None) -> str:
    mean, std = stat["mean"], stat["std"]
    if i is not None:
        mean, std = mean[i], std[i]
    return f"{100 * mean:.2f}±{100 * std:.2f}" if pct else f"{mean:.3f}±{std:.3f}"


def echo_accuracy(results: dict[str, Any], echo) -> None:
    cfg, summary = results["config"], results["summary"]
    budgets = [k for k in summary["ztw"] if k.startswith("acc@")]
    full = summary["full_accuracy"]
    echo(
        f"\n{cfg['description']}; {cfg['num_exits']} exits ({cfg['head']} heads), "
        f"mean±sd over {cfg['seeds']} seeds; full model {100 * sum(full) / len(full):.2f}% on test"
    )
    echo(
        "accuracy (%) at a FLOPs budget, AUC, and FLOPs saved at <= 1 pp drop: 'risk' is fitted on the "
        f"calibration split (drop <= {cfg['delta']:.0%} w.p. >= {1 - cfg['epsilon']:.0%}) and measured on test; "
        "'oracle' is the best test-curve point"
    )
    rows = [
        [
            s.upper(),
            *(_pm(summary[s][b]) for b in budgets),
            _pm(summary[s]["auc"], pct=False),
            _pm(summary[s]["saved_risk"]),
            _pm(summary[s]["drop_risk"]),
            _pm(summary[s]["saved_1pp_oracle"]),
        ]
        for s in STYLES
    ]
    headers = [
        "heads",
        *(f"@{float(b[4:]):.0%}" for b in budgets),
        "AUC",
        "saved % (risk)",
        "drop pp (risk)",
        "saved % (oracle)",
    ]
    echo(format_table(headers, rows))
    fractions = summary["exit_flops_fraction"]
    echo(
        "\nper exit (test, mean±sd): accuracy %, EEFP (AUROC of confidence vs 'exiting here is "
        "optimal') and ECE % (15 bins)"
    )
    echo(
        format_table(
            [
                "exit",
                "FLOPs",
                *(f"{s.upper()} acc" for s in STYLES),
                *(f"{s.upper()} EEFP" for s in STYLES),
                *(f"{s.upper()} ECE" for s in STYLES),
            ],
            [
                [
                    k,
                    f"{f:.0%}",
                    *(_pm(summary[s]["exit_accuracy"], i=k) for s in STYLES),
                    *(_pm(summary[s]["eefp"], pct=False, i=k) for s in STYLES),
                    *(_pm(summary[s]["exit_ece"], i=k) for s in STYLES),
                ]
                for k, f in enumerate(fractions)
            ],
        )
    )


def echo_wallclock(wallclock: dict[str, Any], info: dict[str, Any], echo) -> None:
    rows = wallclock["points"]
    echo(
        f"\nwall-clock, ZTW exits vs the unconverted model, seed 0 ({info['backend']}, "
        f"{info['threads']} threads, {info['cpu']}); medians of interleaved repeats"
    )
    echo(
        format_table(
            [
                "batch",
                "point",
                "FLOPs frac",
                "time frac",
                "ms full",
                "ms adaptive",
                "exits per head",
            ],
            [
                [
                    r["batch_size"],
                    r["point"],
                    f"{r['flops_fraction']:.3f}",
                    f"{r['time_fraction']:.3f}",
                    f"{r['median_ms_full']:.1f}",
                    f"{r['median_ms_adaptive']:.1f}",
                    r["exit_counts"],
                ]
                for r in rows
            ],
        )
    )
    echo(
        "\nfixed cost of the exits (nobody leaves): per early exit and per call, against one full forward"
    )
    echo(
        format_table(
            ["batch", "µs full forward", "µs per exit", "time frac, no exit taken"],
            [
                [
                    o["batch_size"],
                    f"{o['us_full_forward']:.0f}",
                    f"{o['us_per_exit']:.0f}",
                    f"{o['time_fraction_no_exit_taken']:.3f}",
                ]
                for o in wallclock["overhead"]
            ],
        )
    )


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    write_json(out / "exits.json", results)
    first = results["runs"][0]
    plot_exits(
        out / "exits.png",
        {s.upper(): first[s]["curve"] for s in STYLES},
        {
            s.upper(): {"accuracy": first[s]["exit_accuracy"], "eefp": first[s]["eefp"]}
            for s in STYLES
        },
        points={
            f"{s.upper()} risk-controlled": (
                first[s]["risk_control_test"]["flops_fraction"],
                first[s]["risk_control_test"]["accuracy"],
            )
            for s in STYLES
        },
        full_accuracy=first["ztw"]["full_accuracy"],
        title=f"{results['config']['model']} (seed 0): SDN vs ZTW exit heads",
    )
