"""Training, evaluating and calibrating exits on keyword batches (dicts of tensors), with the
tiny Hugging Face classifiers: what `ponder convert` does with tokenized text and images."""

from __future__ import annotations

import pytest
import torch
from tiny_models import CLASSES, hf_classifier, hf_inputs

import ponder
from ponder._early_exit.train import TrainConfig, features, train_exits
from ponder.data import Split, batches

FAMILIES = ("bert", "distilbert", "gpt2", "vit")
N = 12


def _converted(family: str, x):
    model = hf_classifier(family)
    return ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2), example_inputs=x)


def _quick(mode: str) -> TrainConfig:
    return TrainConfig(mode=mode, epochs=2, batch_size=5, ensemble_epochs=1, progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_training_on_keyword_batches_moves_only_the_exits(family):
    x = hf_inputs(family, padded=family != "vit", batch=N)
    y = torch.arange(N) % CLASSES
    model = _converted(family, x)
    backbone = {k: v.clone() for k, v in model.state_dict().items() if "ponder_exits" not in k}
    heads = {k: v.clone() for k, v in model.ponder_exits.state_dict().items()}
    history = train_exits(model, x, y, _quick("frozen"))
    assert len(history["heads"]) == 2 and "ensembles" in history
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in backbone.items())
    moved = model.ponder_exits.state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in heads.items())


def test_joint_training_on_keyword_batches_moves_the_backbone():
    x = hf_inputs("bert", padded=True, batch=N)
    y = torch.arange(N) % CLASSES
    model = _converted("bert", x)
    before = model.bert.encoder.layer[0].output.dense.weight.clone()
    train_exits(model, x, y, _quick("joint"))
    assert not torch.equal(model.bert.encoder.layer[0].output.dense.weight, before)


def test_features_of_keyword_batches_do_not_depend_on_the_batch_size():
    x = hf_inputs("bert", padded=True, batch=N)
    model = _converted("bert", x)
    whole, pieces = features(model, x, batch_size=N), features(model, x, batch_size=5)
    assert [f.shape for f in whole] == [(N, 32), (N, 32)]
    for a, b in zip(whole, pieces, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_exit_data_and_evaluate_take_keyword_inputs():
    x = hf_inputs("gpt2", padded=True, batch=N)
    y = torch.arange(N) % CLASSES
    model = _converted("gpt2", x)
    costs = ponder.count_costs(model, x)
    data = ponder.exit_data(model, x, y, costs)
    assert data.logp.shape == (3, N, CLASSES)
    report = ponder.evaluate(data)
    assert 0.0 <= report["full_accuracy"] <= 1.0


def test_batches_slice_keyword_splits():
    x = hf_inputs("bert", padded=True, batch=N)
    split = Split(x, torch.arange(N) % CLASSES)
    got = list(batches(split, 5))
    assert [len(b[1]) for b in got] == [5, 5, 2]
    assert torch.equal(got[1][0]["input_ids"], x["input_ids"][5:10])
    shuffled = list(batches(split, 5, shuffle=True))
    assert sorted(torch.cat([b[1] for b in shuffled]).tolist()) == sorted(split.y.tolist())
    first = shuffled[0]
    rows = [int(torch.nonzero((x["input_ids"] == r).all(1))[0]) for r in first[0]["input_ids"]]
    assert first[1].tolist() == split.y[rows].tolist()


def test_mismatched_sample_counts_are_refused():
    x = hf_inputs("bert", padded=False, batch=N)
    model = _converted("bert", x)
    with pytest.raises(ponder.ConfigError, match="12 samples but y has 3"):
        train_exits(model, x, torch.zeros(3, dtype=torch.long), _quick("frozen"))
