"""Options several commands share: the risk-control pair (delta, epsilon) and block lists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

UNIT = click.FloatRange(0, 1, min_open=True, max_open=True)


def risk_options(delta: float) -> Callable[[Any], Any]:
    """--delta (default `delta`) and --epsilon, as every command that calibrates takes them."""

    def add(f: Any) -> Any:
        f = click.option(
            "--epsilon",
            default=0.1,
            show_default=True,
            type=UNIT,
            help="Allowed probability that the drop exceeds delta.",
        )(f)
        return click.option(
            "--delta",
            default=delta,
            show_default=True,
            type=UNIT,
            help="Largest accuracy drop against the full model that risk control may allow.",
        )(f)

    return add


def block_list(ctx: click.Context, param: click.Parameter, value: str | None):
    """ "1,3" -> (1, 3); None stays None."""
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"give block numbers separated by commas, got {value!r}") from None
