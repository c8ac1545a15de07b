"""Cut a converted model into stages: modules that torch.export can trace, each running a run
of blocks and ending in an exit head (the last one in the model's own head).

Stage k takes named tensors (model inputs or earlier stages' outputs) and returns named tensors,
each name used once in the whole pipeline: `hidden_k` (what the next block reads), `exit_logp_k`
(the log-probabilities the exit rule reads: the head's for SDN heads, the ensemble's for ZTW)
and, for ZTW, `head_logits_k` [B, k+1, C] (every head's logits so far, which the next head's
cascade and ensemble need); a transformer's first exit also returns `pool_weights` [B, 1, T]
when its exits pool over the attention mask (see `GraphStage`). The last stage returns `logits`.
The exit decision stays on the host: one method per stage, no control flow.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ponder._core.errors import ConfigError
from ponder._early_exit.stack import ATTR, ExitStack
from ponder._early_exit.widths import class_count
from ponder._moe.config import moe_layers, tau_given
from ponder._split.link import ATTR as SPLIT_ATTR
from ponder.export._stages.text import TEXT_DIMS, EncoderStage, is_text_encoder

__all__ = [
    "CONTROLS",
    "MOE_MODES",
    "MOE_TAU",
    "Stage",
    "StageIO",
    "StagePlan",
    "plan_stages",
    "run_chain",
    "run_stages",
]


class ExitTail(nn.Module):
    """Pool -> head k (cascading on the previous head's logits for ZTW) -> exit log-probs."""

    def __init__(self, stack: ExitStack, k: int):
        super().__init__()
        self.pool, self.head = stack.pool, stack.heads[k]
        self.ensemble = stack.ensembles[k] if stack.ensembled else None
        self.k = k

    def forward(
        self,
        hidden: torch.Tensor,
        head_logits: torch.Tensor | None,
        weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # B=batch, C=classes, K=heads before this one, T=tokens
        feats = self.pool.pooled(hidden, weights)  # [B, D]; weights [B, 1, T]: real tokens only
        prev = None if head_logits is None else head_logits[:, -1]  # [B, C]
        if self.ensemble is None:
            return F.log_softmax(self.head(feats, None).float(), dim=-1), None
        logits = self.head(feats, prev)  # [B, C]
        every = (
            logits[:, None] if head_logits is None else torch.cat([head_logits, logits[:, None]], 1)
        )
        return self.ensemble(every), every  # [B, C], [B, K+1, C]


class _SequentialStage(nn.Module):
    """Children [start, stop) of an nn.Sequential backbone, then exit head k (if any)."""

    def __init__(self, children: list[nn.Module], tail: ExitTail | None, cascade_in: bool):
        super().__init__()
        self.body = nn.Sequential(*children)
        self.tail, self.cascade_in = tail, cascade_in

    def forward(self, x: torch.Tensor, head_logits: torch.Tensor | None = None):
        hidden = self.body(x)
        if self.tail is None:
            return (hidden,)  # the model's own head: logits [B, C]
        logp, every = self.tail(hidden, head_logits if self.cascade_in else None)
        return (hidden, logp) if every is None else (hidden, logp, every)


StageIO = list[tuple[list[str], list[str]]]  # per stage: (input names, output names)


@dataclass
class Stage:
    module: nn.Module
    inputs: list[str]  # model inputs or earlier stages' outputs, in call order
    outputs: list[str]
    blocks: list[int]  # backbone block indices this stage runs
    exit: bool  # ends in an early-exit head (False: the model's own head)
    dims: dict[str, dict[int, str]] = field(default_factory=dict)  # dynamic dims beyond batch

    def dynamic_dims(self, name: str) -> dict[int, str]:
        """{dim index: symbolic name} of input `name`: the batch, plus any declared ones
        (control inputs such as `moe_tau` have none)."""
        if name in CONTROLS:
            return {}
        return {0: "batch", **self.dims.get(name, {})}


@dataclass
class StagePlan:
    stages: list[Stage]
    model_inputs: list[str]
    classes: int | None  # None: not a classifier (a text encoder's embedding)
    family: str
    task: str = "classification"
    moe_paths: dict[int, str] = field(default_factory=dict)  # id(MoEFFN) -> path in the model
    # inputs the runtime sets, not the user: name -> default value (not batched)
    controls: dict[str, torch.Tensor] = field(default_factory=dict)
    # (min, max) of each dynamic dimension by name, where the model narrows the default
    bounds: dict[str, tuple[int, int]] = field(default_factory=dict)
    # (stage index, MoE layer) where the layers were traced into the stages' graphs
    moe_stages: list[tuple[int, nn.Module]] = field(default_factory=list)


# The dynamic_k gate's tau as a stage input, shared by every MoE stage of a bundle.
MOE_TAU = "moe_tau"
CONTROLS = (MOE_TAU,)

# How exported MoE layers run: the ponder.kernels backend each one is traced with.
MOE_MODES = {"grouped": "traceable", "masked": "reference"}


def plan_stages(
    model: nn.Module,
    moe: str = "grouped",
    example_inputs: dict[str, torch.Tensor] | None = None,
    *,
    max_batch: int | None = None,
    max_tokens: int | None = None,
) -> StagePlan:
    """The stages of a converted (or plain) model, on a deep copy set up for tracing: eval mode,
    exit hooks inert, MoE layers traced as `moe` says: "grouped" (each expert runs on the rows
    that selected it; data-dependent shapes) or "masked" (every expert on every row, zeroed).
    Models with exits other than an nn.Sequential (transformers) are traced whole and cut at
    their exit blocks, which needs `example_inputs` (input name -> a batch; "x" for a model
    that takes one tensor). max_batch, max_tokens: upper bounds of the dynamic batch and token
    dimensions (None: MAX_BATCH for Sequential models; TRANSFORMER_MAX_BATCH and
    DEFAULT_MAX_TOKENS, within the model's position table, for transformers)."""
    if moe not in MOE_MODES:
        raise ConfigError(f"moe={moe!r} is not one of {list(MOE_MODES)}")
    model = _prepare(model, MOE_MODES[moe])
    stack = getattr(model, ATTR, None)
    family = stack.spec["family"] if stack is not None else _family(model)
    bounds = _bounds(model, family == "sequential", max_batch, max_tokens)
    if family == "sequential":
        plan = _plan_sequential(model, stack)
    elif stack is not None or (not is_text_encoder(model) and example_inputs is not None):
        if example_inputs is None:
            raise ConfigError(
                f"cutting a {family!r} model into stages traces it: pass example_inputs"
            )
        from ponder.export._stages.graph import plan_graph

        plan = plan_graph(model, stack, example_inputs, bounds)
    elif is_text_encoder(model):
        names = ["input_ids", "attention_mask"]
        stage = Stage(EncoderStage(model), names, ["sentence_embedding"], [], False, TEXT_DIMS)
        plan = StagePlan([stage], names, None, "bert", task="embedding")
    else:
        raise ConfigError(
            f"cutting a {family!r} model ({type(model).__name__}) into stages traces it: pass "
            "example_inputs"
        )
    plan.bounds = bounds
    plan.moe_paths = {id(layer): path for path, layer in moe_layers(model).items()}
    for k, stage in enumerate(plan.stages):
        layers = list(moe_layers(stage.module).values())
        if layers:
            tau = all(layer.gate == "dynamic_k" for layer in layers)
            stage.module = _MoEStage(stage.module, layers, tau)
            stage.inputs = [*stage.inputs, MOE_TAU] if tau else stage.inputs
            stage.outputs = [*stage.outputs, f"experts_{k}"]
            if tau:
                default = float(layers[0].gate_params["tau"])
                plan.controls[MOE_TAU] = torch.tensor([default], dtype=torch.float32)
    return plan


class _MoEStage(nn.Module):
    """A stage with MoE layers: optionally takes the dynamic_k gate's tau as its last input
    (`moe_tau` [1], so a device can change it per request), and adds one output
    `experts_<k>` [B]: per sample, the experts its tokens ran, averaged over tokens, summed
    over the stage's MoE layers (float32)."""

    def __init__(self, stage: nn.Module, layers: list[nn.Module], tau_input: bool):
        super().__init__()
        self.stage, self.tau_input = stage, tau_input
        self.layers = layers  # submodules of `stage`; a plain list so nothing registers twice

    def forward(self, *args: torch.Tensor):
        # B=batch
        tau = None
        if self.tau_input:
            *args, tau = args  # [1]
        with tau_given(self.layers, tau):
            out = self.stage(*args)
        counts = [layer.experts_per_sample(args[0].shape[0]) for layer in self.layers]  # [B] each
        return (*out, torch.stack(counts).sum(0))


def _bounds(
    model: nn.Module, sequential: bool, max_batch: int | None, max_tokens: int | None
) -> dict[str, tuple[int, int]]:
    """(1, max) of the dynamic batch, and of tokens for a transformer (see plan_stages)."""
    from ponder.export._stages.trace import DEFAULT_MAX_TOKENS, MAX_BATCH, TRANSFORMER_MAX_BATCH

    batch = max_batch or (MAX_BATCH if sequential else TRANSFORMER_MAX_BATCH)
    if batch < 2:
        raise ConfigError(f"max_batch must be at least 2, got {batch}")
    if sequential:
        return {"batch": (1, batch)}
    # no more than the position table holds: the model cannot take longer inputs anyway
    tokens = min(max_tokens or DEFAULT_MAX_TOKENS, max_positions(model))
    if tokens < 2:
        raise ConfigError(f"max_tokens must be at least 2, got {tokens}")
    return {"batch": (1, batch), "tokens": (1, tokens)}


def max_positions(model: nn.Module) -> int:
    """The longest sequence the model's position table allows: the first Hugging Face config
    found on it or a submodule (a user's head around a BertModel) that says; 512 if none."""
    for module in model.modules():
        config = getattr(module, "config", None)
        for key in ("max_position_embeddings", "n_positions"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return 512


def _family(model: nn.Module) -> str:
    return "sequential" if isinstance(model, nn.Sequential) else type(model).__name__


def _prepare(model: nn.Module, moe_backend: str) -> nn.Module:
    if getattr(model, SPLIT_ATTR, None) is not None:
        raise ConfigError(
            "this model has an edge-cloud split (ponder.SplitConfig): export it as a split "
            "bundle with ponder.export.export_split (ponder export --split), or export the "
            "model as converted before the split"
        )
    model = copy.deepcopy(model).eval()
    stack = getattr(model, ATTR, None)
    if stack is not None:
        # the exit hooks do nothing without a run, but tracing them would still read run
        # state; the stages call the heads themselves. Hooks of the user's own stay.
        stack.detach()
    for layer in moe_layers(model).values():
        layer.backend = moe_backend
    return model


def _plan_sequential(model: nn.Sequential, stack: ExitStack | None) -> StagePlan:
    names = [name for name, _ in model.named_children() if name != ATTR]
    children = [model._modules[name] for name in names]
    if stack is None:
        classes = class_count(children[-1], "the last child of a Sequential must be its classifier")
        whole = Stage(_SequentialStage(children, None, False), ["x"], ["logits"], [], False)
        return StagePlan([whole], ["x"], classes, "sequential")
    spec = stack.spec
    block_of = {names.index(p): b for b, p in enumerate(spec["block_paths"])}
    cuts = [names.index(spec["block_paths"][b]) + 1 for b in spec["exit_blocks"]]
    stages, start = [], 0
    for k, stop in enumerate([*cuts, len(children)]):
        early = k < len(cuts)
        cascade_in = early and stack.ensembled and k > 0
        tail = ExitTail(stack, k) if early else None
        module = _SequentialStage(children[start:stop], tail, cascade_in)
        inputs = ["x" if k == 0 else f"hidden_{k - 1}"]
        inputs += [f"head_logits_{k - 1}"] if cascade_in else []
        outputs = [f"hidden_{k}", f"exit_logp_{k}"]
        outputs += [f"head_logits_{k}"] if early and stack.ensembled else []
        blocks = [block_of[i] for i in range(start, stop) if i in block_of]
        stages.append(Stage(module, inputs, outputs if early else ["logits"], blocks, early))
        start = stop
    return StagePlan(stages, ["x"], spec["classes"], "sequential")


@torch.no_grad()
def run_stages(plan: StagePlan, inputs: dict[str, torch.Tensor]) -> list[dict[str, dict]]:
    """Run every stage eagerly on the whole batch `inputs` (model input name -> tensor): per
    stage, {"inputs": {name: tensor}, "outputs": {name: tensor}} in the stages' call order."""
    known = {**plan.controls, **inputs}
    runs = []
    for stage in plan.stages:
        args = {name: known[name] for name in stage.inputs}
        result = stage.module(*args.values())
        outputs = dict(zip(stage.outputs, result, strict=True))
        known.update(outputs)
        runs.append({"inputs": args, "outputs": outputs})
    return runs


def run_chain(backend: Any, io: StageIO, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every stage of a runtime backend (`ExecuTorchBackend`, `OnnxRuntimeBackend`) in order,
    each fed by name from the model inputs and earlier stages' outputs, as a device chains them;
    returns every named tensor (inputs included) as arrays. io: per stage (input names, output
    names)."""
    known = {name: backend.from_numpy(np.asarray(value)) for name, value in inputs.items()}
    for i, (names, _) in enumerate(io):
        known.update(backend.run_stage(i, {n: known[n] for n in names}))
    return {name: backend.to_numpy(value) for name, value in known.items()}
