"""Adaptive inference: online exits match the offline simulation, and batches really shrink."""

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import inputs, make

import ponder
from ponder._calibration.metrics import simulate_exits
from ponder._core.rules import exit_rule, offline_scores
from ponder._early_exit.heads import GeometricEnsemble, Pool

RULES = ("max_prob", "entropy", "margin", "patience", "ztw")


def converted(family, style="ztw", seed=0):
    model = make(family, seed)
    ponder.convert_(
        model, ponder.EarlyExitConfig(num_exits=3 if family == "conv1d" else 2, style=style)
    )
    torch.manual_seed(seed)
    for name, p in model.ponder_exits.named_parameters():
        # untrained heads are near-uniform; large random weights spread their confidences
        torch.nn.init.zeros_(p) if name.endswith("bias") else torch.nn.init.normal_(p, std=3.0)
    return model.eval()


@pytest.mark.parametrize("family", sorted(tiny_models.FAMILIES))
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("style", ["sdn", "ztw"])
def test_online_exits_match_offline_simulation(family, rule, style):
    model = converted(family, style)
    x = inputs(family, batch=16)
    logp = ponder.exit_outputs(model, x).logp  # [K, N, C]
    scores, preds = offline_scores(exit_rule(rule, ensembled=style == "ztw"), logp)
    # a threshold that lets some samples out at the first exits and keeps others running
    thr = 2 if rule == "patience" else float(np.median(scores[0]))
    result = ponder.infer(model, x, rule=rule, thresholds=thr)
    expected_exit = simulate_exits(scores, thr)
    np.testing.assert_array_equal(result.exit_index.numpy(), expected_exit)
    np.testing.assert_array_equal(
        result.prediction.numpy(), preds[expected_exit, np.arange(len(expected_exit))]
    )
    if rule != "patience":  # random heads rarely agree, so patience mostly runs to the end
        assert len(set(expected_exit.tolist())) > 1, "the case should exercise several exits"


def test_rules_listable_and_unknown_rule_fails_with_list():
    assert set(ponder.list_exit_rules()) == {"max_prob", "entropy", "margin", "patience", "ztw"}
    with pytest.raises(ponder.ConfigError, match="unknown exit rule 'best'; known: entropy"):
        ponder.exit_rule("best")


def test_later_blocks_see_only_the_samples_still_running():
    model = converted("conv1d")
    rows = []
    model[4].register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    x = inputs("conv1d", batch=32)
    # the median exit-0 confidence: about half the batch leaves at the first exit
    thr = float(np.median(np.exp(ponder.exit_outputs(model, x).logp[0].max(-1))))
    rows.clear()
    result = ponder.infer(model, x, rule="max_prob", thresholds=[thr, 2.0, 2.0])
    still_running = int((result.exit_index > 2).sum())  # exits sit after blocks 0, 1 and 3
    assert 0 < still_running < 32
    assert rows == [still_running]


def test_everyone_leaving_early_skips_the_rest_of_the_model():
    model = converted("bert")
    calls = []
    model.classifier.register_forward_hook(lambda *a: calls.append(1))
    result = ponder.infer(model, inputs("bert"), rule="max_prob", thresholds=0.0)
    assert result.exit_index.tolist() == [0] * 6 and calls == []
    assert result.exit_counts() == [6, 0, 0]


def test_a_sample_gets_the_same_answer_alone_as_in_a_shrinking_batch():
    # the padded rows make a wrongly sliced attention mask change the answer
    model = converted("bert", "sdn")
    x = inputs("bert", batch=12)
    scores, _ = offline_scores(exit_rule("margin"), ponder.exit_outputs(model, x).logp)
    thresholds = [float(np.median(scores[0])), 2.0]  # about half leave at exit 0, the rest run on
    batch = ponder.infer(model, x, rule="margin", thresholds=thresholds)
    assert 0 < int((batch.exit_index == 2).sum()) < 12
    for i in range(12):
        alone = ponder.infer(
            model, {k: v[i : i + 1] for k, v in x.items()}, rule="margin", thresholds=thresholds
        )
        assert alone.exit_index.item() == batch.exit_index[i].item()
        torch.testing.assert_close(alone.logprobs[0], batch.logprobs[i], rtol=1e-5, atol=1e-5)


class _PadPoolingGPT(tiny_models.TinyGPT):
    """Reads its input again after the blocks, as GPT2ForSequenceClassification does: the
    classifier takes each row's last non-padding token (id 0 pads), found from `input_ids`."""

    def forward(self, input_ids, attention_mask=None):
        x = self.transformer.wte(input_ids)  # [B, T, D]
        for block in self.transformer.h:
            x = block(x, causal=True)[0]
        positions = torch.arange(input_ids.shape[1])  # [T]
        last = (positions * (input_ids != 0)).argmax(dim=1)  # [B]
        return self.score(x[torch.arange(input_ids.shape[0]), last])  # [B, C]


def test_a_tail_that_reads_the_inputs_sees_the_whole_batch():
    torch.manual_seed(0)
    model = ponder.convert_(_PadPoolingGPT(), ponder.EarlyExitConfig(num_exits=2, style="sdn"))
    for name, p in model.ponder_exits.named_parameters():
        torch.nn.init.zeros_(p) if name.endswith("bias") else torch.nn.init.normal_(p, std=3.0)
    model.eval()
    x = inputs("gpt", batch=12)
    x = {"input_ids": x.clamp(min=1), "attention_mask": torch.ones_like(x)}
    x["input_ids"][::3, 4:] = 0  # right padding, marked in both inputs
    x["attention_mask"][::3, 4:] = 0
    scores, _ = offline_scores(exit_rule("margin"), ponder.exit_outputs(model, x).logp)
    thresholds = [float(np.sort(scores[0])[5:7].mean()), 2.0]  # half leave at exit 0
    batch = ponder.infer(model, x, rule="margin", thresholds=thresholds)
    assert batch.exit_counts() == [6, 0, 6]
    full = torch.log_softmax(model(**x), dim=-1)  # [B, C], no exit run
    ran_on = batch.exit_index == 2
    torch.testing.assert_close(batch.logprobs[ran_on], full[ran_on], rtol=1e-5, atol=1e-5)
    for i in range(12):
        length = int(x["attention_mask"][i].sum())
        alone = {k: v[i : i + 1, :length] for k, v in x.items()}
        alone = ponder.infer(model, alone, rule="margin", thresholds=thresholds)
        assert alone.exit_index.item() == batch.exit_index[i].item()
        torch.testing.assert_close(alone.logprobs[0], batch.logprobs[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["last", "mean", "cls"])
def test_token_pooling_with_a_mask_pools_what_the_row_pools_alone(kind):
    pool = Pool(kind)
    h = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(0))  # [B, T, D]
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]])
    got = pool(h, mask)  # [B, D]
    if kind == "cls":  # token 0 either way: BERT-like models pad on the right
        torch.testing.assert_close(got, h[:, 0], rtol=0, atol=0)
        return
    for row in range(3):
        alone = h[row : row + 1, mask[row].bool()]  # [1, t, D], the real tokens only
        torch.testing.assert_close(got[row : row + 1], pool(alone), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pool(h, torch.ones(3, 6)), pool(h), rtol=1e-6, atol=1e-6)


def test_the_ensemble_of_logits_is_the_weighted_mean_of_log_probs():
    """ZTW's exit k: log_softmax(mean_i(w_i log p_i) + b) over heads 0..k; the same from a list
    of per-head logits (eager) and from the stacked [B, K, C] logits an exported stage carries,
    where heads after k are ignored."""
    g = torch.Generator().manual_seed(0)
    ensemble = GeometricEnsemble(3, 5)
    with torch.no_grad():
        ensemble.log_w.copy_(torch.tensor([0.2, -0.4, 0.7]))
        ensemble.bias.copy_(torch.randn(5, generator=g))
    logits = [3 * torch.randn(4, 5, generator=g) for _ in range(4)]  # one head more than members
    w = ensemble.log_w.exp() / 3
    mean = sum(w[i] * torch.log_softmax(logits[i], -1) for i in range(3))
    want = torch.log_softmax(mean + ensemble.bias, -1)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(logits), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ensemble(torch.stack(logits, 1)), want, rtol=1e-5, atol=1e-5)


def test_per_exit_thresholds_and_bad_threshold_count():
    model = converted("conv1d")
    x = inputs("conv1d")
    never = ponder.infer(model, x, thresholds=[2.0, 2.0, 2.0])
    assert never.exit_index.tolist() == [3] * 6
    torch.testing.assert_close(never.logprobs, torch.log_softmax(model(x), -1))
    with pytest.raises(ponder.ConfigError, match="one per early exit"):
        ponder.infer(model, x, thresholds=[0.5, 0.5])


def test_infer_on_an_unconverted_model_says_how_to_convert():
    with pytest.raises(ponder.ConfigError, match=r"ponder.convert_\(model"):
        ponder.infer(make("conv1d"), inputs("conv1d"))


def test_a_run_inside_a_run_is_refused_clearly():
    model = converted("conv1d")
    x = inputs("conv1d")
    handle = model[4].register_forward_hook(lambda *a: ponder.infer(model, x))
    with pytest.raises(ponder.PonderError, match="already active"):
        ponder.infer(model, x, thresholds=2.0)
    handle.remove()
    # the failed call left no run behind
    assert ponder.exit_outputs(model, x).logp.shape[0] == 4


def test_infer_warns_on_a_model_in_training_mode():
    model = converted("conv1d").train()
    with pytest.warns(UserWarning, match=r"call model.eval\(\) first"):
        ponder.infer(model, inputs("conv1d"), thresholds=2.0)
