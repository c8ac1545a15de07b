"""`ponder simulate` with a policy that paces energy: per window, the inference energy the policy
spent against its [pacing] budget, beside the same policy without pacing (all SIMULATED)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PACED, UNPACED = "policy", "policy without pacing"
SHOWN_WINDOWS = 24


def pacing_words(pacing: Any) -> str:
    """E.g. "at most 3% of a 15 Wh battery (1,620 J) on inference per 3600 s window"."""
    return (
        f"at most {pacing.battery_percent:g}% of a {pacing.battery_wh:g} Wh battery "
        f"({pacing.budget_mj / 1000:,.4g} J) on inference per {pacing.window_s:g} s window"
    )


def pacing_report(result: Any, echo: Callable[[str], None]) -> None:
    """A table of the windows (energy, net battery drain, accuracy; paced and unpaced) and how
    many went over the budget; nothing when the policy has no [pacing]."""
    from ponder._core.report import format_table

    pacing = result.pacing()
    if pacing is None:
        return
    echo(
        f"energy pacing (simulated): {pacing_words(result.policy.pacing)}, off the charger; "
        "J = inference energy, battery = net drain in points (idle draw included, < 0 charging)"
    )
    head = ["window h", "policy J", "unpaced J", "policy battery", "unpaced battery"]
    head += ["policy acc.", "unpaced acc."]
    rows = []
    for w in pacing["windows"][:SHOWN_WINDOWS]:
        paced, unpaced = (w["strategies"][name] for name in (PACED, UNPACED))
        row = [f"{w['start_h']:g}-{w['end_h']:.3g}"]
        row += [f"{paced['spent_j']:,.1f}", f"{unpaced['spent_j']:,.1f}"]
        row += [f"{paced['battery_drain_percent']:.2f}", f"{unpaced['battery_drain_percent']:.2f}"]
        row += [_accuracy(paced), _accuracy(unpaced)]
        rows.append(row)
    echo(format_table(head, rows))
    left = len(pacing["windows"]) - SHOWN_WINDOWS
    if left > 0:
        echo(f"  ... {left} more windows in simulate.json")
    count, budget = len(pacing["windows"]), pacing["budget_j"]
    over = ", ".join(
        f"{name} {t['windows_over_budget']} of {count} (peak {t['peak_window_j']:,.1f} J)"
        for name, t in pacing["totals"].items()
        if name in (PACED, UNPACED)
    )
    echo(f"windows over the {budget:,.4g} J budget: {over}")


def _accuracy(window: dict[str, Any]) -> str:
    acc = window["mean_expected_accuracy"]
    return "-" if acc is None else f"{acc:.4f}"
