"""Tests of the D2DMoE conversion: FFN detection, MoEFFN, gates, the converter, routers."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch
from tiny_models import TinyBert, Unsupported, make
from torch import nn

import ponder
from ponder._core.config import config_from_dict
from ponder._moe.config import FoldedIntoMoE, MoEFFN, moe_layers
from ponder._moe.ffn import find_ffns
from ponder._moe.gates import dynamic_k, top_k, top_p
from ponder._moe.router import expert_norms, train_routers
from ponder.models.text import _transformers

# float32 defaults (rtol 1.3e-6) are too tight for a sum over experts taken in another order
# than the dense matmul's, through whole models; 1e-5 on outputs of size ~1 is still far below
# any real error (a dropped expert moves outputs by ~1e-1).
TOL = {"rtol": 1e-5, "atol": 1e-5}


def mlp(act: nn.Module | None = None, d: int = 8, h: int = 32, out: int | None = None):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, h), act or nn.GELU(), nn.Linear(h, out or d)).eval()


def hf_model(family: str) -> nn.Module:
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("needs transformers: pip install 'ponder[nlp]'")
    # through ponder, which switches the hub off before huggingface_hub first reads the setting
    transformers = _transformers()
    torch.manual_seed(0)
    small = {"vocab_size": 100, "num_hidden_layers": 2, "num_attention_heads": 2}
    if family == "bert":
        config = transformers.BertConfig(hidden_size=32, intermediate_size=64, **small)
        return transformers.BertModel(config).eval()
    if family == "gpt2":
        config = transformers.GPT2Config(
            n_embd=32, bos_token_id=0, eos_token_id=0, **small | {"num_hidden_layers": 2}
        )
        return transformers.GPT2Model(config).eval()
    config = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_key_value_heads=2, **small
    )
    return transformers.LlamaModel(config).eval()


def run(model: nn.Module, x) -> torch.Tensor:
    with torch.no_grad():
        out = model(**x) if isinstance(x, dict) else model(x)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def convert(model: nn.Module, config: ponder.MoEConfig) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ponder.NoEffectWarning)
        return ponder.convert_(model, config)


# ---------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("act", "name"),
    [(nn.ReLU(), "relu"), (nn.GELU(), "gelu"), (nn.GELU("tanh"), "gelu_tanh"), (nn.SiLU(), "silu")],
)
def test_finds_a_sequential_mlp_and_its_activation(act, name):
    (spec,) = find_ffns(mlp(act))
    assert (spec.kind, spec.activation, spec.moe_path, spec.folded) == (
        "sequential",
        name,
        "0",
        ("1", "2"),
    )


def test_finds_every_mlp_inside_a_model_and_skips_non_ffns():
    assert [s.path for s in find_ffns(TinyBert())] == [f"encoder.layer.{i}.mlp" for i in range(4)]
    assert find_ffns(mlp(out=5)) == []  # D -> H -> 5 is a head, not an FFN
    overlapping = nn.Sequential(
        nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8)
    )
    assert [s.moe_path for s in find_ffns(overlapping)] == ["0"]  # no layer in two FFNs
    assert [s.moe_path for s in find_ffns(nn.Sequential(*mlp(), *mlp()))] == ["0", "3"]
    assert find_ffns(Unsupported()) == []  # Linear -> Linear, no activation


@pytest.mark.slow  # importing transformers takes ~3 s
@pytest.mark.parametrize(
    ("family", "kind", "moe_path", "folded", "act"),
    [
        ("bert", "bert", "encoder.layer.0.intermediate", ("encoder.layer.0.output.dense",), "gelu"),
        ("gpt2", "gpt2", "h.0.mlp.c_fc", ("h.0.mlp.act", "h.0.mlp.c_proj"), "gelu_tanh"),
        ("llama", "gated", "layers.0.mlp", (), "silu"),
    ],
)
def test_finds_hf_ffns(family, kind, moe_path, folded, act):
    specs = find_ffns(hf_model(family))
    assert len(specs) == 2
    assert (specs[0].kind, specs[0].moe_path, specs[0].folded, specs[0].activation) == (
        kind,
        moe_path,
        folded,
        act,
    )
    assert (specs[0].up is not None) == (kind == "gated")


def test_named_paths_select_ffns_and_non_ffns_fail_clearly():
    model = TinyBert()
    assert [s.moe_path for s in find_ffns(model, ("encoder.layer.1.mlp",))] == [
        "encoder.layer.1.mlp.0"
    ]
    with pytest.raises(
        ponder.UnsupportedModelError, match=r"'encoder.layer.1' is a _Layer .*norm1: LayerNorm"
    ):
        find_ffns(model, ("encoder.layer.1",))
    with pytest.raises(ponder.ConfigError, match="no submodule 'nope'"):
        find_ffns(model, ("nope",))


# ---------------------------------------------------------------- all experts == dense
def _equal_with_all_experts(model: nn.Module, x, expert_size: int, count: int) -> MoEFFN:
    dense = run(model, x)
    convert(model, ponder.MoEConfig(expert_size=expert_size))
    assert len(moe_layers(model)) == count
    with ponder.all_experts(model):
        torch.testing.assert_close(run(model, x), dense, **TOL)
    return next(iter(moe_layers(model).values()))


@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU(), nn.GELU("tanh"), nn.SiLU()])
def test_all_experts_reproduce_a_sequential_mlp(act):
    layer = _equal_with_all_experts(mlp(act), torch.randn(3, 5, 8), expert_size=4, count=1)
    assert layer.num_experts == 8 and layer.last_mask.shape == (15, 8) and layer.last_mask.all()


def test_all_experts_reproduce_tiny_bert():
    x = torch.randint(0, 50, (2, 7))
    _equal_with_all_experts(TinyBert(), x, expert_size=8, count=4)


@pytest.mark.slow  # importing transformers takes ~3 s
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_all_experts_reproduce_hf_models(family):
    model = hf_model(family)
    x = {"input_ids": torch.randint(0, 100, (2, 7))}
    _equal_with_all_experts(model, x, expert_size=8, count=2)
    folded = [m for m in model.modules() if isinstance(m, FoldedIntoMoE)]
    assert len(folded) == {"bert": 2, "gpt2": 4, "llama": 0}[family]
    if family == "bert":  # BertOutput's dropout, residual and LayerNorm still run around it
        assert type(model.encoder.layer[0].output).__name__ == "BertOutput"


# ---------------------------------------------------------------- gates
SCORES = torch.tensor([[4.0, 2.0, 1.0, 1.0], [1.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_dynamic_k_tau_points_towards_fewer_experts():
    assert dynamic_k(SCORES, 0.0).all()  # tau = 0 keeps every expert
    assert dynamic_k(SCORES, 1.0).tolist() == [  # tau = 1 keeps the best (and its ties)
        [True, False, False, False],
        [False, True, True, False],
        [True, True, True, True],
    ]
    assert dynamic_k(SCORES, 0.5).sum(-1).tolist() == [2, 2, 4]  # r >= 0.5 max
    counts = [int(dynamic_k(SCORES, t).sum()) for t in (0.0, 0.3, 0.6, 1.0)]
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("k", [1, 2, 4, 9])
def test_top_k_keeps_exactly_k(k):
    mask = top_k(SCORES, k)
    assert (mask.sum(-1) == min(k, 4)).all()
    assert mask[0, 0] and mask[1, 1:3].sum() == min(k, 2)


def test_top_p_keeps_the_smallest_set_reaching_p():
    # row 0 shares: 0.5, 0.25, 0.125, 0.125
    assert top_p(SCORES, 0.5)[0].tolist() == [True, False, False, False]
    assert top_p(SCORES, 0.6)[0].tolist() == [True, True, False, False]
    assert top_p(SCORES, 1.0)[0].all()
    assert top_p(SCORES, 1.0)[1].tolist() == [True, True, True, False]  # zero share not needed
    assert top_p(SCORES, 0.1).sum(-1).tolist() == [1, 1, 1]  # at least one expert always


def test_gates_are_listed_and_validated():
    assert ponder.list_gates() == ["dynamic_k", "top_k", "top_p"]
    with pytest.raises(ponder.ConfigError, match="unknown gate 'nope'; known: dynamic_k, top_k"):
        ponder.MoEConfig(gate="nope")
    for bad, fragment in [({"tau": 1.5}, r"tau=1.5 must be in \[0, 1\]"), ({"k": 0}, "k=0")]:
        with pytest.raises(ponder.ConfigError, match=fragment):
            ponder.MoEConfig(**bad)


def test_set_gate_changes_behaviour_without_retraining():
    model = convert(mlp(d=16, h=64), ponder.MoEConfig(expert_size=4, tau=0.0))  # 16 experts
    x = torch.randn(20, 16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    run(model, x)
    assert ponder.expert_counts(model)["0"].tolist() == [16] * 20
    ponder.set_gate_(model, "dynamic_k", tau=1.0)
    run(model, x)
    assert ponder.expert_counts(model)["0"].max() < 16
    ponder.set_gate_(model, "top_k", k=3)
    run(model, x)
    assert ponder.expert_counts(model)["0"].tolist() == [3] * 20
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ponder.ConfigError, match="takes exactly one parameter, 'p'"):
        ponder.set_gate_(model, "top_p", tau=0.5)
    with pytest.raises(ponder.ConfigError, match="no MoE layers; convert it first"):
        ponder.set_gate_(mlp(), "top_k", k=1)


def test_fewer_experts_change_the_output_and_the_mask_says_which_ran():
    model = convert(mlp(d=16, h=64), ponder.MoEConfig(expert_size=8, gate="top_k", k=2))
    x = torch.randn(2, 3, 16)
    with ponder.all_experts(model):
        dense = run(model, x)
    sparse = run(model, x)
    layer = model[0]
    assert layer.last_mask.shape == (6, 8) and (layer.last_mask.sum(-1) == 2).all()
    assert not torch.allclose(sparse, dense, **TOL)
    # the same result as summing by hand the experts the mask names
    from ponder.kernels import moe_reference

    tokens = x.reshape(-1, 16)
    expected = moe_reference(
        tokens, layer.last_mask, layer.w1, layer.w2, b1=layer.b1, b2=layer.b2, activation="gelu"
    )
    torch.testing.assert_close(sparse.reshape(-1, 16), expected, **TOL)


# ---------------------------------------------------------------- config and converter
def test_config_round_trips_through_json():
    config = ponder.MoEConfig(expert_size=16, ffns=["a.mlp", "b.mlp"], gate="top_p", p=0.8)
    assert config.ffns == ("a.mlp", "b.mlp")
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.to_dict()["type"] == "moe" and config.gate_params == {"p": 0.8}
    with pytest.raises(ponder.ConfigError, match="expert_size=0 must be an integer >= 1"):
        ponder.MoEConfig(expert_size=0)


def test_converting_twice_warns_and_changes_nothing():
    model = convert(TinyBert(), ponder.MoEConfig(expert_size=8))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(ponder.NoEffectWarning, match="moe conversion changed nothing"):
        ponder.convert_(model, ponder.MoEConfig(expert_size=8))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(ponder.ConfigError, match="already has MoE layers from a different config"):
        ponder.convert_(model, ponder.MoEConfig(expert_size=4))


def test_nothing_to_convert_warns():
    with pytest.warns(ponder.NoEffectWarning, match="changed nothing on Unsupported"):
        ponder.convert_(Unsupported(), ponder.MoEConfig())


def test_conversion_is_reproducible_and_reports_bad_expert_sizes():
    a = convert(make("bert"), ponder.MoEConfig(expert_size=8, seed=3))
    b = convert(make("bert"), ponder.MoEConfig(expert_size=8, seed=3))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(
        ponder.ConfigError, match=r"FFN at 'encoder.layer.0.mlp': .*does not divide"
    ):
        ponder.convert_(TinyBert(), ponder.MoEConfig(expert_size=5))


# ---------------------------------------------------------------- routers
def test_trained_router_ranks_expert_norms():
    torch.manual_seed(0)
    model = convert(mlp(d=16, h=128), ponder.MoEConfig(expert_size=8, router_hidden=64))
    layer = model[0]

    # Inputs with varied scale and direction, so expert norms vary from token to token.
    def batch(n):
        return torch.randn(n, 16) * torch.rand(n, 1) * 3

    train = [batch(256) for _ in range(8)]
    history = train_routers(model, train, epochs=30, lr=3e-3, progress=False)
    assert history[-1] < history[0] / 4
    held_out = batch(512)
    with torch.no_grad():
        predicted, true = layer.router(held_out), expert_norms(layer, held_out)  # [T, E]
    rho = _spearman(predicted.flatten(), true.flatten())  # 0.90 when written
    # within a token, which is what the gate compares: mean 0.80 over 100 tokens when written
    per_token = sum(_spearman(predicted[i], true[i]) for i in range(100)) / 100
    assert rho > 0.5 and per_token > 0.5, (rho, per_token)


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


# ---------------------------------------------------------------- the real MiniLM
@pytest.mark.slow
def test_minilm_converts_and_all_experts_match_dense_embeddings():
    from ponder.models.text import embed, load_minilm, stdlib_docstrings

    model, tokenizer = load_minilm()
    texts = stdlib_docstrings(max_texts=32)
    dense = embed(model, tokenizer, texts)
    convert(model, ponder.MoEConfig(expert_size=64))
    layers = moe_layers(model)
    assert len(layers) == 6 and all(m.num_experts == 24 for m in layers.values())
    with ponder.all_experts(model):
        torch.testing.assert_close(embed(model, tokenizer, texts), dense, rtol=0, atol=1e-5)


def test_exits_after_moe_read_the_block_width_not_the_router_width():
    """Regression: the last Linear inside a converted block is the router's (E outputs)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 12)),
        nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 12)),
        nn.Linear(12, 5),
    )
    ponder.convert_(model, ponder.MoEConfig(expert_size=8))
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=1))
    assert model.ponder_exits.spec["widths"] == [12]
    assert ponder.infer(model.eval(), torch.randn(3, 12), thresholds=0.5).prediction.shape == (3,)
