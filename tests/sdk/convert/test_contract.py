"""The contract every registered converter keeps, on a tiny model of every family.

A new converter joins by adding its config to CONFIGS (a typical setting) and NO_OP_CONFIGS
(a setting that asks for nothing); test_every_converter_is_in_the_suite fails until it does.
The Hugging Face classification wrappers of every family ponder finds blocks in run under
per-sample exits at the end, padded and not.
"""

from __future__ import annotations

import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F
from tiny_models import CLASSES, hf_alone, hf_classifier, hf_inputs, inputs, make

import ponder
from ponder._convert.calls import call_model
from ponder._convert.convert import CONVERTERS
from ponder._core.rules import exit_rule, offline_scores
from ponder._early_exit.infer import forward_all

for _name in ponder.__all__:  # import every public module, so every converter is registered
    getattr(ponder, _name)

CONFIGS = {
    "early_exit": lambda: ponder.EarlyExitConfig(num_exits=2),
    "moe": lambda: ponder.MoEConfig(expert_size=8),
    "split": lambda: ponder.SplitConfig(block=1, codec="int8"),
}
NO_OP_CONFIGS = {
    "early_exit": lambda: ponder.EarlyExitConfig(num_exits=0),
    "moe": lambda: ponder.MoEConfig(ffns=()),
    "split": lambda: ponder.SplitConfig(),
}
# Converters that apply to only some families (the others have nothing for them to convert).
# moe: the families with transformer FFNs; split: the families whose blocks pass tokens
APPLIES_TO = {"moe": ("bert", "gpt", "vit"), "split": ("bert", "gpt", "vit")}
ADDS_EXITS = {"early_exit"}  # converters whose models have early exits to check
# converters that add no parameters (the split link; its gradient path: tests/sdk/split)
NO_PARAMETERS = {"split"}


def _exit_loss(model, x):
    labels = torch.arange(6) % CLASSES
    return sum(F.nll_loss(logp, labels) for logp in forward_all(model, x).exit_logps)


def _moe_loss(model, x):
    """Experts learn from the task (all of them running), routers by regression."""
    from ponder._moe.router import router_loss

    labels = torch.arange(6) % CLASSES
    with ponder.all_experts(model):
        task = F.cross_entropy(call_model(model, x), labels)
    return task + router_loss(model, x)


TRAINING_LOSSES = {"moe": _moe_loss}  # loss(model, inputs) that trains the new parts

FAMILIES = sorted(tiny_models.FAMILIES)
CONVERTER_NAMES = CONVERTERS.names()


@pytest.fixture(params=CONVERTER_NAMES)
def converter(request) -> str:
    return request.param


@pytest.fixture(params=FAMILIES)
def family(request, converter) -> str:
    if request.param not in APPLIES_TO.get(converter, FAMILIES):
        pytest.skip(f"{converter} does not apply to the {request.param} family")
    return request.param


def _config(converter: str, table=CONFIGS):
    if converter not in table:
        pytest.fail(f"converter {converter!r} has no config in test_contract.py; add one")
    return table[converter]()


def _converted(converter: str, family: str):
    model = make(family)
    torch.manual_seed(0)
    return ponder.convert_(model, _config(converter), example_inputs=inputs(family))


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_every_converter_is_in_the_suite():
    assert CONVERTER_NAMES, "no converter is registered"
    for table in (CONFIGS, NO_OP_CONFIGS):
        assert set(CONVERTER_NAMES) <= set(table), f"add the missing converters to {table}"


def test_forward_runs_and_keeps_the_output_shape(converter, family):
    x = inputs(family)
    before = call_model(make(family), x)
    model = _converted(converter, family)
    after = call_model(model, x)
    assert after.shape == before.shape == (6, CLASSES)
    assert torch.isfinite(after).all()


def test_every_exit_gives_finite_log_probabilities(converter, family):
    if converter not in ADDS_EXITS:
        pytest.skip(f"{converter} adds no exits")
    model = _converted(converter, family)
    run = forward_all(model, inputs(family))
    assert len(run.exit_logps) >= 2  # at least one early exit and the model's own head
    for logp in [*run.head_logits, *run.exit_logps]:
        assert logp.shape == (6, CLASSES) and torch.isfinite(logp).all()
    for logp in run.exit_logps:  # log-probabilities: each row sums to one
        torch.testing.assert_close(logp.exp().sum(-1), torch.ones(6), rtol=0, atol=1e-5)


def test_gradients_reach_every_new_parameter(converter, family):
    if converter in NO_PARAMETERS:
        pytest.skip(f"{converter} adds no parameters")
    old = {name for name, _ in make(family).named_parameters()}
    model = _converted(converter, family)
    new = {name: p for name, p in model.named_parameters() if name not in old}
    assert new, "the conversion added no parameters"
    TRAINING_LOSSES.get(converter, _exit_loss)(model, inputs(family)).backward()
    silent = [n for n, p in new.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_converting_with_nothing_to_do_matches_the_original(converter, family):
    original, model = make(family), make(family)
    hooks, state = _hooks(model), _state(model)
    with pytest.warns(ponder.NoEffectWarning, match="changed nothing"):
        ponder.convert_(model, _config(converter, NO_OP_CONFIGS), example_inputs=inputs(family))
    assert type(model) is type(original) and _hooks(model) == hooks
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    x = inputs(family)
    torch.testing.assert_close(call_model(model, x), call_model(original, x), rtol=0, atol=0)


def test_converting_twice_changes_nothing(converter, family):
    model = _converted(converter, family)
    x = inputs(family)
    hooks, state, out = _hooks(model), _state(model), call_model(model, x)
    exits = forward_all(model, x).exit_logps if converter in ADDS_EXITS else []
    with pytest.warns(ponder.NoEffectWarning, match="changed nothing"):
        ponder.convert_(model, _config(converter), example_inputs=inputs(family))
    assert _hooks(model) == hooks
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    torch.testing.assert_close(call_model(model, x), out, rtol=0, atol=0)
    for a, b in zip(forward_all(model, x).exit_logps if exits else [], exits, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_converted_model_exports_and_matches_eager(converter, family):
    """torch.export traces the converted model (MoE layers on the "traceable" kernel, the one
    bundles use) and the exported program computes what eager does. Tolerance 1e-5: the same
    float32 ops, fused or reordered by the exported graph. Bundles (stages, ExecuTorch, ONNX)
    are tested in tests/export."""
    from ponder._moe.config import moe_layers

    model = _converted(converter, family)
    for layer in moe_layers(model).values():
        layer.backend = "traceable"
    x = inputs(family)
    args, kwargs = ((), x) if isinstance(x, dict) else ((x,), {})
    program = torch.export.export(model, args, kwargs, strict=False)
    torch.testing.assert_close(
        program.module()(*args, **kwargs), call_model(model, x), rtol=1e-5, atol=1e-5
    )


# --- Hugging Face classification wrappers under per-sample exits --------------------------------
# Their own code after the blocks may read the original inputs (GPT-2 pools the last
# non-padding token it finds in `input_ids`), so a shrinking batch must not reach it.

HF_CASES = [
    pytest.param(family, padded, id=f"{family}-{'padded' if padded else 'unpadded'}")
    for family in tiny_models.HF_CLASSIFIERS
    for padded in (False, True)
    if family != "vit" or not padded  # images have no padding
]
NEVER = 2.0  # a max-probability threshold no exit reaches


def _hf_converted(family: str, x: dict[str, torch.Tensor]):
    model = hf_classifier(family)
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=2), example_inputs=x)
    torch.manual_seed(0)
    for name, p in model.ponder_exits.named_parameters():
        # Untrained heads are near-uniform. std 0.3 spreads the first exit's max-probability
        # over 0.23..0.45 on these inputs, no two samples closer than 3e-4; larger weights
        # saturate several samples at 1.0, and then no threshold can split them.
        torch.nn.init.zeros_(p) if name.endswith("bias") else torch.nn.init.normal_(p, std=0.3)
    return model


def _first_exit_scores(model, x) -> np.ndarray:
    """Each sample's max-probability score at the first exit [B] (ZTW-ensembled)."""
    logp = ponder.exit_outputs(model, x).logp  # [K, B, C]
    return offline_scores(exit_rule("max_prob", ensembled=True), logp)[0][0]


def _model_logprobs(family: str, x) -> torch.Tensor:
    with torch.inference_mode():
        return torch.log_softmax(hf_classifier(family)(**x).logits, dim=-1)  # [B, C]


@pytest.mark.parametrize(("family", "padded"), HF_CASES)
def test_hf_wrapper_with_no_exit_firing_matches_the_original(family, padded):
    x = hf_inputs(family, padded)
    model = _hf_converted(family, x)
    assert model.ponder_exits.spec["exit_blocks"] == [0, 2]  # 4 blocks found
    result = ponder.infer(model, x, thresholds=NEVER)
    assert result.exit_index.tolist() == [2] * 6
    # the same ops on the same rows: the exits only read the hidden states
    torch.testing.assert_close(result.logprobs, _model_logprobs(family, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("family", "padded"), HF_CASES)
def test_hf_wrapper_answers_each_sample_as_it_would_alone(family, padded):
    x = hf_inputs(family, padded)
    model = _hf_converted(family, x)
    scores = np.sort(_first_exit_scores(model, x))
    threshold = float(scores[2:4].mean())  # between two samples: half leave at the first exit
    batch = ponder.infer(model, x, thresholds=[threshold, NEVER])
    assert batch.exit_counts() == [3, 0, 3]
    # Tolerance 1e-5: alone, a sample runs without padding, so attention sums over fewer
    # (masked) keys in another order; the exits and predictions must agree exactly.
    for row in range(6):
        alone = ponder.infer(model, hf_alone(x, row), thresholds=[threshold, NEVER])
        assert alone.exit_index.item() == batch.exit_index[row].item()
        assert alone.prediction.item() == batch.prediction[row].item()
        torch.testing.assert_close(alone.logprobs[0], batch.logprobs[row], rtol=0, atol=1e-5)
    ran_on = batch.exit_index == 2  # those rows got the model's own head, on the whole batch
    torch.testing.assert_close(
        batch.logprobs[ran_on], _model_logprobs(family, x)[ran_on], rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("leaving", ["one", "all but one"])
@pytest.mark.parametrize(("family", "padded"), HF_CASES)
def test_hf_wrapper_with_one_sample_apart_from_the_rest(family, padded, leaving):
    """One sample leaves at the first exit and the others run to the end, or the reverse."""
    x = hf_inputs(family, padded)
    model = _hf_converted(family, x)
    scores = np.sort(_first_exit_scores(model, x))
    threshold = float(scores[-2:].mean() if leaving == "one" else scores[:2].mean())
    rows = []
    last = model.get_submodule(model.ponder_exits.spec["block_paths"][-1])
    handle = last.register_forward_pre_hook(
        lambda m, args, kwargs: rows.append((args or (kwargs["hidden_states"],))[0].shape[0]),
        with_kwargs=True,
    )
    result = ponder.infer(model, x, thresholds=[threshold, NEVER])
    handle.remove()
    staying = 5 if leaving == "one" else 1
    assert result.exit_counts() == [6 - staying, 0, staying]
    assert rows == [staying]  # the last block ran only the rows still running
    ran_on = result.exit_index == 2
    torch.testing.assert_close(
        result.logprobs[ran_on], _model_logprobs(family, x)[ran_on], rtol=0, atol=1e-5
    )
