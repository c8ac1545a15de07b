"""`ponder convert`: a Hugging Face classifier folder and the user's labelled data to a trained,
calibrated early-exit checkpoint that `ponder evaluate` and `ponder export` can read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ponder._calibration.report import assess
from ponder._convert.calls import take
from ponder._convert.checkpoint import save
from ponder._convert.convert import convert_
from ponder._core.errors import ConfigError
from ponder._early_exit.config import EarlyExitConfig
from ponder._early_exit.train import TrainConfig, train_exits
from ponder.data.files import MAX_LENGTH, load_files
from ponder.models.pretrained import (
    POOLINGS,
    PooledClassifier,
    as_keywords,
    default_pooling,
    fit_head,
    is_classifier,
    load_pretrained,
)

_GENERIC = "LABEL_"  # transformers' placeholder class names: LABEL_0, LABEL_1, ...


def convert_pretrained(
    model_dir: str | Path,
    train: str | Path,
    out: str | Path,
    *,
    calib: str | Path | None = None,
    exits: int | None = None,
    exit_blocks: tuple[int, ...] | None = None,
    style: str = "ztw",
    head: str = "linear",
    joint: bool = False,
    pooling: str = "auto",
    epochs: int = 30,
    batch_size: int = 32,
    max_length: int = MAX_LENGTH,
    seed: int = 0,
    rule: str = "max_prob",
    delta: float = 0.01,
    epsilon: float = 0.1,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Load the model in `model_dir` (a classifier; or a base model, which gets `pooling` and a
    linear head fitted on its frozen features), add exits (`exits` evenly spaced, or after the
    0-based blocks `exit_blocks`), train them on `train` (backbone frozen unless `joint`),
    calibrate on the calibration split, print per-exit accuracy and save a checkpoint in `out`
    that records the data files. Returns `assess`'s result."""
    if pooling not in ("auto", *POOLINGS):
        raise ConfigError(f"pooling {pooling!r} is not one of {('auto', *POOLINGS)}")
    model, preprocessor = load_pretrained(model_dir)
    given = None
    if is_classifier(model):
        names = [model.config.id2label[i] for i in sorted(model.config.id2label)]
        given = None if all(str(n).startswith(_GENERIC) for n in names) else names
    splits = load_files(
        train, calib, preprocessor=preprocessor, classes=given, max_length=max_length, seed=seed
    )
    splits = as_keywords(splits, model.main_input_name)
    echo(
        f"{Path(model_dir).name}: {type(model).__name__}, data {splits.name}: "
        f"{len(splits.train)} train / {len(splits.calib)} calibration / {len(splits.test)} test "
        f"samples, {splits.num_classes} classes"
    )
    if not is_classifier(model):
        model = _with_head(model, model_dir, splits, pooling, seed, progress, echo)
    elif splits.num_classes > model.config.num_labels:
        raise ConfigError(
            f"the data has {splits.num_classes} classes but the model's head predicts "
            f"{model.config.num_labels}; use a classifier fine-tuned on these classes"
        )
    config = EarlyExitConfig(
        exits=exit_blocks,
        num_exits=4 if exits is None else exits,
        style=style,
        head=head,
        pooling=model.pooling if isinstance(model, PooledClassifier) else "auto",
    )
    convert_(model, config, example_inputs=take(splits.train.x, slice(0, 2)))
    spec = model.ponder_exits.spec
    echo(f"exits after blocks {spec['exit_blocks']} of {len(spec['block_paths'])} ({style})")
    mode = "joint" if joint else "frozen"
    train_config = TrainConfig(
        mode=mode, epochs=epochs, batch_size=batch_size, seed=seed, progress=progress
    )
    history = train_exits(model, splits.train.x, splits.train.y, train_config)
    echo(f"trained the exits ({mode}) in {history['seconds']:.1f} s")
    result = assess(model.eval(), splits, rule=rule, delta=delta, epsilon=epsilon, echo=echo)
    data_files = {
        "train": str(Path(train).resolve()),
        "calib": None if calib is None else str(Path(calib).resolve()),
        "classes": list(splits.classes),
        "max_length": max_length,
        "seed": seed,
        "main_input": model.main_input_name,
    }
    extra = {
        "data_files": data_files,
        "rule": rule,
        "risk_control": result["risk_control"].to_dict(),
        "train": train_config.to_dict(),
    }
    save(model, out, extra=extra)
    echo(f"wrote {out}; next: ponder evaluate {out}, ponder export {out} --out BUNDLE")
    return result


def _with_head(model, model_dir, splits, pooling: str, seed: int, progress: bool, echo):
    """A base model (no classification head) with pooling and a linear head over the data's
    classes, the head fitted on the frozen model's pooled features of the training split."""
    normalize = False
    if pooling == "auto":
        pooling, normalize = default_pooling(model_dir, model.config)
    wrapped = PooledClassifier(model, splits.num_classes, pooling, normalize).eval()
    accuracy = fit_head(wrapped, splits.train.x, splits.train.y, seed=seed, progress=progress)
    how = f"{pooling} pooling" + (", L2-normalised" if normalize else "")
    echo(
        f"{type(model).__name__} has no classification head: added {how} and a linear head "
        f"over {splits.num_classes} classes, fitted on its frozen features (training accuracy "
        f"{accuracy:.1%})"
    )
    return wrapped
