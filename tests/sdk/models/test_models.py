"""Built-in classifiers: block structure, shapes, the registry and a short training run."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import ponder
from ponder import models


def _blocks_and_head(model: nn.Sequential) -> tuple[list[nn.Module], nn.Module]:
    children = list(model.children())
    return children[:-1], children[-1]


def test_digits_cnn_blocks_output_feature_maps():
    model = models.digits_cnn(width=8, num_blocks=4).eval()
    blocks, head = _blocks_and_head(model)
    assert len(blocks) == 4 and isinstance(head[-1], nn.Linear)
    x = torch.rand(3, 1, 8, 8)
    shapes = []
    for block in blocks:
        x = block(x)
        shapes.append(tuple(x.shape))
    assert shapes == [(3, 8, 8, 8), (3, 8, 8, 8), (3, 16, 4, 4), (3, 16, 4, 4)]
    assert head(x).shape == (3, 10)


def test_mnist1d_cnn_keeps_length_and_equal_cost_blocks():
    model = models.mnist1d_cnn(width=8, num_blocks=6, num_classes=7).eval()
    blocks, head = _blocks_and_head(model)
    assert len(blocks) == 6
    x = torch.randn(2, 1, 40)
    for block in blocks:
        x = block(x)
        assert x.shape == (2, 8, 40)
    assert head(x).shape == (2, 7)
    sizes = [sum(p.numel() for p in b.parameters()) for b in blocks]
    assert sizes[1:] == [sizes[1]] * 5 and sizes[0] < 1.2 * sizes[1]  # stem adds only a little


@pytest.mark.parametrize("name", ["digits_cnn", "mnist1d_cnn"])
def test_create_model_round_trips_through_json(name):
    kwargs = json.loads(json.dumps({"width": 4, "num_blocks": 3, "num_classes": 5}))
    torch.manual_seed(0)
    a = models.create_model(name, **kwargs)
    torch.manual_seed(0)
    b = models.MODELS[name](**kwargs)
    x = torch.randn(2, 1, 8, 8) if name == "digits_cnn" else torch.randn(2, 1, 40)
    torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)
    assert a(x).shape == (2, 5)


def test_registry_errors_name_known_models():
    assert models.list_models() == ["digits_cnn", "digits_vit", "mnist1d_cnn"]
    with pytest.raises(
        ponder.ConfigError, match="known models: digits_cnn, digits_vit, mnist1d_cnn"
    ):
        models.create_model("resnet50")
    with pytest.raises(ponder.ConfigError, match="width must be a positive integer"):
        models.create_model("digits_cnn", width=0)
    with pytest.raises(ponder.ConfigError, match="kernel_size must be odd"):
        models.mnist1d_cnn(kernel_size=4)


def test_recipes_build_their_models():
    for recipe in (models.DIGITS_RECIPE, models.MNIST1D_RECIPE):
        model = models.create_model(
            recipe["model"], width=recipe["width"], num_blocks=recipe["num_blocks"]
        )
        assert len(model) == recipe["num_blocks"] + 1


def test_train_classifier_smoke_on_digits():
    pytest.importorskip("sklearn")
    from ponder.data.datasets import load_digits

    splits = load_digits(seed=0)
    torch.manual_seed(0)
    model = models.digits_cnn(width=8, num_blocks=3)
    before = models.evaluate_accuracy(model, splits.test)
    model.train()
    result = models.train_classifier(
        model, splits, epochs=1, lr=1e-2, batch_size=16, progress=False
    )
    assert set(result) == {"train_acc", "test_acc", "seconds"}
    assert result["test_acc"] > max(0.5, before)  # chance is 0.1; this run gets about 0.86
    assert models.evaluate_accuracy(model, splits.test) == result["test_acc"]  # deterministic


def test_train_classifier_rejects_bad_arguments():
    pytest.importorskip("sklearn")
    from ponder.data.datasets import load_digits

    splits = load_digits(seed=0)
    model = models.digits_cnn(width=4, num_blocks=2)
    with pytest.raises(ponder.ConfigError, match="batch_size"):
        models.train_classifier(model, splits, epochs=1, lr=1e-2, batch_size=1, progress=False)
    with pytest.raises(ponder.ConfigError, match="epochs"):
        models.train_classifier(model, splits, epochs=0, lr=1e-2, batch_size=8, progress=False)
