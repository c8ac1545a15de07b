"""`MoEConfig` and its conversion (D2DMoE): each dense FFN becomes a dynamic-k mixture of
experts (`MoEFFN`) with a router that predicts every expert's output norm and a gate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ponder._convert.convert import CONVERTERS
from ponder._convert.surgery import get_module, replace_module
from ponder._core.config import Config
from ponder._core.errors import ConfigError
from ponder._moe.ffn import FFNSpec, find_ffns, linear_weights
from ponder._moe.gates import GATES, check_gate, gate_mask
from ponder._moe.split import ExpertWeights, split_ffn
from ponder.kernels import moe_ffn

__all__ = [
    "FoldedIntoMoE",
    "MoEConfig",
    "MoEFFN",
    "Router",
    "all_experts",
    "expert_counts",
    "moe_layers",
    "set_gate_",
    "tau_given",
]


@dataclass(frozen=True)
class MoEConfig(Config):
    """How to turn dense FFNs into dynamic-k mixtures of experts (D2DMoE).

    expert_size: hidden neurons per expert (must divide each FFN's hidden width; small for
    accuracy studies, larger for speed). ffns: paths of the modules holding the FFNs to convert
    (None: every FFN found). gate: "dynamic_k" (knob tau in [0, 1]; 0 keeps every expert, 1
    only the best), "top_k" (knob k) or "top_p" (knob p in (0, 1]); only the chosen gate's knob
    is used, and `set_gate_` changes gate and knob later without retraining.
    router_hidden: width of each router's hidden layer. seed: k-means split and router init.
    """

    kind = "moe"
    expert_size: int = 64
    ffns: tuple[str, ...] | None = None
    gate: str = "dynamic_k"
    tau: float = 0.5
    k: int = 1
    p: float = 0.9
    router_hidden: int = 128
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.ffns, list | str):
            ffns = (self.ffns,) if isinstance(self.ffns, str) else tuple(self.ffns)
            object.__setattr__(self, "ffns", ffns)
        if self.ffns is not None and not all(isinstance(p, str) for p in self.ffns):
            raise ConfigError(f"ffns must be module paths (strings), got {self.ffns!r}")
        for name in ("expert_size", "router_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an integer >= 1")
        for name, gate in (("tau", "dynamic_k"), ("k", "top_k"), ("p", "top_p")):
            check_gate(gate, {name: getattr(self, name)})
        GATES.get(self.gate)  # unknown gate -> ConfigError listing the known ones

    @property
    def gate_params(self) -> dict[str, float]:
        """The chosen gate's knob, e.g. {"tau": 0.5}."""
        return {GATES.get(self.gate).param: getattr(self, GATES.get(self.gate).param)}


class Router(nn.Module):
    """D2DMoE router: Linear(D, hidden) -> ReLU -> Linear(hidden, E) -> abs, predicting the L2
    norm of each expert's output for each token."""

    ponder_side_module = True  # not on the data path: its widths are not the block's

    def __init__(self, width: int, hidden: int, experts: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x))).abs()  # [T, D] -> [T, E]


class FoldedIntoMoE(nn.Identity):
    """Stands where a dense FFN part was (e.g. BERT's output.dense) whose work the MoEFFN at
    `moe_path` now does; passes its input through, so the modules around it run as before."""

    def __init__(self, moe_path: str):
        super().__init__()
        self.moe_path = moe_path

    def extra_repr(self) -> str:
        return f"moe_path={self.moe_path!r}"


class MoEFFN(nn.Module):
    """A dense FFN split into experts that run per token as the router and gate choose.

    Holds the stacked expert weights (kernel layout, see `ponder.kernels.moe_reference`), the
    output bias b2 (added once), a `Router` and the gate. With `run_all = True` every expert
    runs, which reproduces the dense FFN. `last_mask` [T, E] records which experts ran for
    each token of the last forward, so cost is counted from what really ran.
    """

    def __init__(
        self,
        experts: ExpertWeights,
        b2: torch.Tensor | None,
        activation: str,
        config: MoEConfig,
        ffn_kind: str,
    ):
        super().__init__()
        d = experts.w1.shape[1]

        def param(t: torch.Tensor | None) -> nn.Parameter | None:
            return None if t is None else nn.Parameter(t.detach().clone())

        self.w1, self.b1 = param(experts.w1), param(experts.b1)  # [E, D, e], [E, e]
        self.w2, self.b2 = param(experts.w2), param(b2)  # [E, e, D], [D]
        self.w_up = param(experts.w_up)  # [E, D, e] (gated FFNs)
        self.register_buffer("neuron_index", experts.neuron_index.clone())  # [E, e]
        self.router = Router(d, config.router_hidden, experts.num_experts).to(experts.w1)
        self.activation, self.config, self.ffn_kind = activation, config, ffn_kind
        self.gate, self.gate_params = config.gate, config.gate_params
        self.run_all = False
        self.backend = "auto"
        self.last_mask: torch.Tensor | None = None
        # a tensor tau for the dynamic_k gate, set by an exported stage that takes tau as an
        # input (so a device can change it per request); None: gate_params decide
        self.tau_input: torch.Tensor | None = None

    @property
    def num_experts(self) -> int:
        return self.w1.shape[0]

    @property
    def out_features(self) -> int:
        """Output width, as on the nn.Linear it replaces (early exits read it)."""
        return self.w2.shape[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # T=tokens (all leading dims flattened), D=width, E=experts
        tokens = x.reshape(-1, x.shape[-1])  # [T, D]
        if self.run_all:
            mask = torch.ones(tokens.shape[0], self.num_experts, dtype=torch.bool, device=x.device)
        else:
            params = self.gate_params if self.tau_input is None else {"tau": self.tau_input}
            mask = gate_mask(self.gate, self.router(tokens), params)  # [T, E]
        self.last_mask = mask.detach()
        out = moe_ffn(
            tokens,
            mask,
            self.w1,
            self.w2,
            b1=self.b1,
            b2=self.b2,
            w_up=self.w_up,
            activation=self.activation,
            backend=self.backend,
        )  # [T, D]
        return out.reshape(x.shape)

    def experts_per_sample(self, batch: int) -> torch.Tensor:
        """Per sample, the experts its tokens ran in the last forward, averaged over its tokens
        [batch] (float32; the last input was [batch, tokens, D])."""
        # E=experts; last_mask [batch * tokens, E]
        return self.last_mask.reshape(batch, -1, self.num_experts).sum(-1).float().mean(1)

    def extra_repr(self) -> str:
        knob = ", ".join(f"{k}={v}" for k, v in self.gate_params.items())
        e, d, size = self.w1.shape
        return f"experts={e}, expert_size={size}, width={d}, act={self.activation}, " + (
            f"gate={self.gate}({knob}), ffn_kind={self.ffn_kind}"
        )


def moe_layers(model: nn.Module) -> dict[str, MoEFFN]:
    """Every MoEFFN in `model`, by path, in module order."""
    return {path: m for path, m in model.named_modules() if isinstance(m, MoEFFN)}


def _require_moe(model: nn.Module) -> dict[str, MoEFFN]:
    layers = moe_layers(model)
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no MoE layers; convert it first with "
            "ponder.convert_(model, ponder.MoEConfig(...))"
        )
    return layers


def set_gate_(model: nn.Module, name: str, **params: float) -> nn.Module:
    """Switch every MoEFFN of `model` to gate `name` with knob `params` (e.g. tau=0.8), in
    place and without retraining; returns the model."""
    checked = check_gate(name, params)
    for layer in _require_moe(model).values():
        layer.gate, layer.gate_params = name, dict(checked)
    return model


@contextlib.contextmanager
def all_experts(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every MoEFFN runs all its experts (the dense FFN's result)."""
    layers = _require_moe(model).values()
    before = [layer.run_all for layer in layers]
    for layer in layers:
        layer.run_all = True
    try:
        yield model
    finally:
        for layer, flag in zip(layers, before, strict=True):
            layer.run_all = flag


@contextlib.contextmanager
def tau_given(layers: list[MoEFFN], tau: torch.Tensor | None) -> Iterator[None]:
    """While inside, the dynamic-k gates of `layers` use the tensor `tau` [1] (an exported
    stage's input) instead of their gate_params; nothing changes when `tau` is None."""
    if tau is None:
        yield
        return
    for layer in layers:
        layer.tau_input = tau
    try:
        yield
    finally:
        for layer in layers:
            layer.tau_input = None


def expert_counts(model: nn.Module) -> dict[str, torch.Tensor]:
    """Experts that ran per token [T] in each MoEFFN's last forward (long), by path."""
    return {
        path: layer.last_mask.sum(-1)
        for path, layer in _require_moe(model).items()
        if layer.last_mask is not None
    }


# ---------------------------------------------------------------- conversion
@CONVERTERS.register("moe")
def _convert(model: nn.Module, config: MoEConfig, example_inputs: Any) -> bool:
    existing = moe_layers(model)
    if existing:
        if all(layer.config == config for layer in existing.values()):
            return False
        other = next(layer.config for layer in existing.values() if layer.config != config)
        raise ConfigError(
            f"this model already has MoE layers from a different config ({other}); "
            "convert a fresh copy of the model instead"
        )
    specs = find_ffns(model, config.ffns)
    for i, spec in enumerate(specs):
        moe = _build(model, spec, config, seed=config.seed + i)
        replace_module(model, spec.moe_path, moe)
        for path in spec.folded:
            replace_module(model, path, FoldedIntoMoE(spec.moe_path))
    return bool(specs)


def _build(model: nn.Module, spec: FFNSpec, config: MoEConfig, seed: int) -> MoEFFN:
    w1, b1 = linear_weights(get_module(model, spec.first))  # [H, D], [H]
    w2, b2 = linear_weights(get_module(model, spec.second))  # [D, H], [D]
    w_up, up_bias = (None, None)
    if spec.up is not None:
        w_up, up_bias = linear_weights(get_module(model, spec.up))
    if up_bias is not None:
        raise ConfigError(
            f"the gated FFN at {spec.path!r} has a bias on its up projection, which the MoE "
            "kernels do not support yet; convert a model whose up projections have no bias"
        )
    try:
        experts = split_ffn(w1, b1, w2, expert_size=config.expert_size, w_up=w_up, seed=seed)
    except ConfigError as e:
        raise ConfigError(f"FFN at {spec.path!r}: {e}") from None
    with torch.random.fork_rng(devices=[]):  # reproducible routers, global RNG untouched
        torch.manual_seed(seed)
        return MoEFFN(experts, b2, spec.activation, config, spec.kind)
