"""`ponder evaluate`: read a checkpoint back, evaluate its exits and calibrate a threshold."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ponder._calibration.report import assess, write_assessment
from ponder._convert.checkpoint import load, read_config
from ponder._core.errors import ConfigError
from ponder.data.datasets import Splits, load_dataset
from ponder.models.pretrained import recorded_splits


def evaluate_checkpoint(
    path: str | Path,
    *,
    data: str | None = None,
    rule: str | None = None,
    delta: float = 0.01,
    epsilon: float = 0.1,
    budget: float | None = None,
    out: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Load a checkpoint, evaluate every exit on the data set's test split and fit a
    risk-controlled threshold on its calibration split. `data` and `rule` default to what the
    checkpoint recorded when it was saved: a built-in data set's name, or the data files
    `ponder convert` trained on (read with the model folder's tokenizer or image processor)."""
    meta = read_config(path)
    extra = meta["extra"]
    rule = rule or extra.get("rule", "max_prob")
    splits = _splits(path, meta, data)
    model = load(path)
    echo(
        f"{path}: {model.ponder_exits.num_exits} exits, evaluated on {splits.name} "
        f"({len(splits.calib)} calibration / {len(splits.test)} test samples)"
    )
    result = assess(
        model, splits, rule=rule, delta=delta, epsilon=epsilon, echo=echo, budget=budget
    )
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        report, plot = write_assessment(Path(out), result, f"{Path(path).name} on {splits.name}")
        echo(f"wrote {report} and {plot}")
    return result


def _splits(path: str | Path, meta: dict[str, Any], data: str | None) -> Splits:
    """The recorded data files (or the file `data` in their place), else the data set named
    by `data` or recorded."""
    recorded = recorded_splits(meta, data)
    if recorded is not None:
        return recorded
    spec = {"name": data} if data else dict(meta["extra"].get("data") or {})
    if "name" not in spec:
        raise ConfigError(f"{path} does not say which data set it was trained on; pass --data NAME")
    return load_dataset(spec.pop("name"), **spec)
