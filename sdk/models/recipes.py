"""Recipes: a data set, a built-in model and its training settings, as one plain dict."""

from __future__ import annotations

from typing import Any

from ponder.data.datasets import Splits, load_dataset

_MODEL_KEYS = ("width", "num_blocks", "heads", "kernel_size", "num_classes")
_DATA_KEYS = ("num_samples",)


def load_recipe_data(recipe: dict[str, Any]) -> Splits:
    kwargs = {k: recipe[k] for k in _DATA_KEYS if k in recipe}
    return load_dataset(recipe["dataset"], seed=recipe.get("seed", 0), **kwargs)


def fit_recipe(recipe: dict[str, Any], splits: Splits, progress: bool = True):
    """Build the recipe's model and train it on `splits`; returns (model, training stats)."""
    from ponder.models import create_model
    from ponder.models.fit import train_classifier

    model = create_model(recipe["model"], **{k: recipe[k] for k in _MODEL_KEYS if k in recipe})
    stats = train_classifier(
        model,
        splits,
        epochs=recipe["epochs"],
        lr=recipe["lr"],
        batch_size=recipe["batch_size"],
        seed=recipe.get("seed", 0),
        progress=progress,
    )
    return model.eval(), stats
