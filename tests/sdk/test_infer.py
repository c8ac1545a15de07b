"""Adaptive inference: online exits match the offline simulation, and batches really shrink."""

import numpy as np
import pytest
import tiny_models
import torch
from tiny_models import inputs, make

import ponder
from ponder._metrics import simulate_exits
from ponder._rules import exit_rule, offline_scores

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
