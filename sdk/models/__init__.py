"""Small built-in classifiers, their training recipes and a plain trainer, and the offline
sentence encoder (all-MiniLM-L6-v2) with a docstring corpus for text experiments."""

from ponder.models.builtin import (
    DIGITS_RECIPE,
    MNIST1D_RECIPE,
    MODELS,
    ResidualBlock1d,
    create_model,
    digits_cnn,
    list_models,
    mnist1d_cnn,
)
from ponder.models.fit import evaluate_accuracy, train_classifier
from ponder.models.vit import DIGITS_VIT_RECIPE, DigitsViT, digits_vit

__all__ = [
    "DIGITS_RECIPE",
    "DIGITS_VIT_RECIPE",
    "MNIST1D_RECIPE",
    "MODELS",
    "DigitsViT",
    "ResidualBlock1d",
    "create_model",
    "digits_cnn",
    "digits_vit",
    "evaluate_accuracy",
    "list_models",
    "mnist1d_cnn",
    "train_classifier",
]
