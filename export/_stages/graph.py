"""Stages of any model whose blocks ponder found (BERT-, GPT-2- and ViT-like transformers,
user-named blocks): the whole model is traced once with `torch.export`, and its graph is cut
after each exit block. Stage 0 holds the model's prefix (embeddings, class token, positions,
mask building) and its blocks up to the first exit; the last stage holds the model's own tail.

Every value computed in one stage and read in a later one becomes a named stage output (the
block's output is `hidden_k`; masks and other tensors built once keep their graph names), so a
device chains stages by name exactly as it does for Sequential models. All of them have the
batch as dimension 0, so a runtime can drop the rows that left at an exit from every one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.export import Dim

from ponder._core.errors import ConfigError, UnsupportedModelError
from ponder._early_exit.infer import final_logits
from ponder._moe.config import moe_layers, tau_given

__all__ = [
    "GraphCut",
    "GraphStage",
    "cut_graph",
    "is_token_input",
    "plan_graph",
    "sizes_from_hidden",
]


class _Logits(nn.Module):
    """The model called on keyword inputs, returning the class logits (no caches, no hidden
    states: what the stages do not need is dead code the trace drops) and, for each MoE layer,
    the experts each sample's tokens ran [B] (averaged over its tokens), computed by a hook
    right after the layer so that the trace places it in the layer's stage."""

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        keyword: bool,
        tau_layers: list,
        moe: list | None = None,
    ):
        super().__init__()
        self.model, self.names, self.keyword = model, names, keyword
        self.no_cache = "use_cache" in inspect.signature(model.forward).parameters
        self.tau_layers = tau_layers  # MoE layers whose dynamic-k tau is the last input
        self.moe = moe or []  # a plain list: the layers are already submodules of `model`

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        counts: list[torch.Tensor] = []

        def count(layer: nn.Module, layer_args: tuple, _out: torch.Tensor) -> None:
            counts.append(layer.experts_per_sample(layer_args[0].shape[0]))  # [B]

        hooks = [layer.register_forward_hook(count) for layer in self.moe]
        tau = None
        if self.tau_layers:
            *args, tau = args  # [1]
        try:
            with tau_given(self.tau_layers, tau):
                logits = self._logits(*args)
        finally:
            for hook in hooks:
                hook.remove()
        return (logits, *counts) if counts else logits

    def _logits(self, *args: torch.Tensor) -> torch.Tensor:
        if not self.keyword:
            return final_logits(self.model(*args))
        kwargs = dict(zip(self.names, args, strict=True))
        if self.no_cache:
            kwargs["use_cache"] = False  # GPT-2-like models return key/value caches otherwise
        return final_logits(self.model(**kwargs))


@dataclass
class GraphCut:
    """Per stage: the fx module, its input names (in call order), its output names (the hidden
    state first), and the symbolic dims {input name: {dim: symbol}} of its inputs."""

    modules: list[fx.GraphModule]
    inputs: list[list[str]]
    outputs: list[list[str]]
    dims: list[dict[str, dict[int, str]]]


def in_block(node: fx.Node, path: str) -> bool:
    """Whether `node` was traced inside the module at `path` of the user's model (the trace's
    module paths start at the wrapper, whose attribute `model` is the user's model)."""
    stack = node.meta.get("nn_module_stack") or {}
    for fqn, _ in stack.values():
        fqn = str(fqn).removeprefix("L['self'].").removeprefix("model.")
        if fqn == path or fqn.startswith(path + "."):
            return True
    return False


def _symbols(value: Any, names: dict[str, str]) -> dict[int, str] | None:
    """{dim: name} of a traced tensor's symbolic dims (batch, tokens), None if not a tensor."""
    if not isinstance(value, torch.Tensor):
        return None
    dims = {}
    for i, size in enumerate(value.shape):
        if isinstance(size, torch.SymInt):
            dims[i] = names.get(str(size.node.expr), str(size.node.expr))
    return dims


def cut_graph(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    block_paths: list[str],
    dynamic: dict[str, dict[int, Any]],
    keyword: bool = True,
    tau: tuple[str, torch.Tensor, list] | None = None,
    recompute: bool = False,
) -> GraphCut:
    """Trace `model` (exit hooks detached) on keyword `inputs` with `dynamic` shapes and cut it
    after each of `block_paths` (the exit blocks, in order). keyword=False: the model takes
    its one input positionally. A stage with MoE layers also returns `experts_<k>` [B]: per
    sample, the experts its tokens ran (averaged over tokens), summed over the stage's layers.

    recompute: a later stage computes again what depends on the model's inputs alone (masks
    built from `attention_mask`, positions, sizes) instead of receiving it, and reads the sizes
    of an input it needs for nothing else from its hidden state (same symbolic dims): what
    crosses the cut is then the hidden state and the inputs the later stage reads values of.
    An edge-cloud split needs this, as the cloud rebuilds masks for the tokens it was sent."""
    names = list(inputs)
    moe = list(moe_layers(model).values())
    wrapper = _Logits(model, names, keyword, tau[2] if tau else [], moe)
    if tau:  # (name, default [1], layers): the dynamic-k gates' tau, a stage input
        inputs, names = {**inputs, tau[0]: tau[1]}, [*names, tau[0]]
    shapes = tuple(dynamic.get(n, {}) for n in names)
    try:
        program = torch.export.export(
            wrapper, tuple(inputs.values()), dynamic_shapes=(shapes,), strict=False
        )
    except Exception as e:  # torch.export raises many types; say what was traced and why
        first = str(e).splitlines()[0] if str(e) else ""
        raise UnsupportedModelError(
            f"torch.export could not trace {type(model).__name__} on inputs {names}: "
            f"{type(e).__name__}: {first}. Pass the inputs its forward takes (a dict of keyword "
            "tensors for Hugging Face models)"
        ) from e
    gm = program.module()
    graph_inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(graph_inputs) != len(names):
        raise UnsupportedModelError(f"traced {len(graph_inputs)} inputs for {names}")
    given = dict(zip(graph_inputs, names, strict=True))
    symbol_names = {}
    for node, name in given.items():
        for dim, size in enumerate(node.meta["val"].shape):
            if isinstance(size, torch.SymInt):
                symbol_names.setdefault(str(size.node.expr), dynamic[name][dim].__name__)
    batch = next(s for s, name in symbol_names.items() if name == "batch")
    body = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
    position = {n: i for i, n in enumerate(body)}
    pure = _input_only(gm.graph) if recompute else set()
    ends, hiddens = [], []
    for path in block_paths:
        inside = [n for n in body if in_block(n, path)]
        if not inside:
            raise UnsupportedModelError(f"the trace has no operation inside block {path!r}")
        outs = [n for n in inside if any(not (in_block(u, path)) for u in n.users)]
        hidden = max(outs or inside, key=position.get)
        ends.append(position[inside[-1]])
        hiddens.append(hidden)
    stage_of = {}
    for n in body:
        stage_of[n] = next((k for k, e in enumerate(ends) if position[n] <= e), len(ends))
    count = len(ends) + 1
    modules, ins, outs_names, dims = [], [], [], []
    value_name: dict[fx.Node, str] = dict(given)
    for k, h in enumerate(hiddens):
        value_name[h] = f"hidden_{k}"
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    result = output_node.args[0]  # the logits, alone or first in a tuple with the counts
    logits, counts = (
        (result[0], list(result[1:])) if isinstance(result, tuple | list) else (result, [])
    )
    for k in range(count):
        graph, env = fx.Graph(), {}
        stage_inputs: list[str] = []

        def arg(node: fx.Node, graph=graph, env=env, stage_inputs=stage_inputs, k=k) -> fx.Node:
            if node in env:
                return env[node]
            if node.op == "get_attr":
                env[node] = graph.get_attr(node.target)
                return env[node]
            if (
                node.op != "placeholder"
                and stage_of.get(node, k) < k
                and (not _batched(node, batch) or node in pure)
            ):
                # a size or a tensor without the batch first (positions, shapes), or with
                # `recompute` anything the inputs alone give: computed again here from what
                # this stage has, so only batched tensors travel
                env[node] = graph.node_copy(node, lambda a: arg(a))
                return env[node]
            if node.op == "placeholder" or stage_of.get(node, k) < k:
                if node not in value_name:
                    value_name[node] = f"{node.name}_{stage_of[node]}"
                name = value_name[node]
                placeholder = graph.placeholder(name)
                placeholder.meta = dict(node.meta)
                env[node] = placeholder
                stage_inputs.append(name)
                return placeholder
            raise AssertionError(node)

        for n in body:
            if stage_of[n] != k:
                continue
            env[n] = graph.node_copy(n, lambda a: arg(a))
        later = [
            n
            for n in body
            if stage_of[n] == k
            and _batched(n, batch)
            and n not in pure
            and _used_after(n, k, stage_of, output_node)
        ]
        experts = _experts(graph, [env[c] for c in counts if stage_of.get(c) == k])
        extra, extra_names = ((experts,), [f"experts_{k}"]) if experts is not None else ((), [])
        if k < count - 1:
            later = [hiddens[k]] + [n for n in later if n is not hiddens[k]]
            for n in later:
                value_name.setdefault(n, f"{n.name}_{k}")
            graph.output(tuple(env[n] for n in later) + extra)
            outs_names.append([value_name[n] for n in later] + extra_names)
        else:
            graph.output((arg(logits), *extra))
            outs_names.append(["logits", *extra_names])
        if recompute and k:
            sizes_from_hidden(graph, stage_inputs, f"hidden_{k - 1}")
        modules.append(fx.GraphModule(gm, graph))
        ins.append(stage_inputs)
        dims.append(
            {
                name: _symbols(node.meta.get("val"), symbol_names) or {}
                for node, name in ((p, p.target) for p in graph.nodes if p.op == "placeholder")
            }
        )
    return GraphCut(modules, ins, outs_names, dims)


def _input_only(graph: fx.Graph) -> set[fx.Node]:
    """The nodes whose value depends on the graph's inputs alone: no parameter or buffer
    (get_attr) among their ancestors."""
    pure: set[fx.Node] = set()
    for n in graph.nodes:
        if n.op == "placeholder" or (
            n.op == "call_function" and all(a in pure for a in n.all_input_nodes)
        ):
            pure.add(n)
    return pure


_SIZE = torch.ops.aten.sym_size.int


def sizes_from_hidden(graph: fx.Graph, stage_inputs: list[str], hidden: str) -> None:
    """Inputs of a stage read only for their sizes read them from `hidden` instead (the dim
    with the same symbol), and stop being inputs."""
    places = {n.target: n for n in graph.nodes if n.op == "placeholder"}
    h = places.get(hidden)
    if h is None:
        return
    symbols = {_symbol(size): d for d, size in enumerate(h.meta["val"].shape)}
    for name, p in places.items():
        if p is h or not p.users or any(u.target is not _SIZE for u in p.users):
            continue
        dims = [symbols.get(_symbol(p.meta["val"].shape[u.args[1]])) for u in p.users]
        if None in dims:
            continue
        for u, d in zip(list(p.users), dims, strict=True):
            u.args = (h, d)
        graph.erase_node(p)
        stage_inputs.remove(name)


def _symbol(size: Any) -> str | None:
    return str(size.node.expr) if isinstance(size, torch.SymInt) else None


def _experts(graph: fx.Graph, counts: list[fx.Node]) -> fx.Node | None:
    """The sum of a stage's per-layer expert counts [B] (None: the stage has no MoE layer)."""
    if not counts:
        return None
    total = counts[0]
    for c in counts[1:]:
        total = graph.call_function(torch.ops.aten.add.Tensor, (total, c))
    return total


def _batched(node: fx.Node, batch: str) -> bool:
    """A tensor whose first dimension is the trace's batch symbol `batch`."""
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return False
    size = value.shape[0]
    return isinstance(size, torch.SymInt) and str(size.node.expr) == batch


def _used_after(node: fx.Node, k: int, stage_of: dict, output_node: fx.Node) -> bool:
    return any(u is not output_node and stage_of.get(u, k) > k for u in node.users)


# The per-token pooling weights [B, 1, T] the first exit builds from `attention_mask` and hands
# to the later exits (see `Pool.token_weights`).
POOL_WEIGHTS = "pool_weights"


class GraphStage(nn.Module):
    """One cut of the traced graph, then (for an early stage) exit head k on its block output,
    pooled over the real tokens when the model takes an `attention_mask`: the first exit builds
    the pooling weights from the mask (input `mask`) and, with `emit`, outputs them; a later
    exit reads them (input `weights`)."""

    def __init__(
        self,
        body: fx.GraphModule,
        tail: nn.Module | None,
        body_inputs: int,
        cascade_in: bool,
        mask: int | None = None,
        weights: int | None = None,
        emit: bool = False,
    ):
        super().__init__()
        self.body, self.tail = body, tail
        self.body_inputs, self.cascade_in = body_inputs, cascade_in
        self.mask, self.weights, self.emit = mask, weights, emit

    def forward(self, *args: torch.Tensor):
        out = tuple(self.body(*args[: self.body_inputs]))  # (hidden [B, ...], carried ...)
        if self.tail is None:
            return out  # the model's own head: (logits [B, C],)
        head_logits = args[-1] if self.cascade_in else None
        weights = args[self.weights] if self.weights is not None else None
        if self.mask is not None:
            weights = self.tail.pool.token_weights(args[self.mask], out[0].dtype)  # [B, 1, T]
        logp, every = self.tail(out[0], head_logits, weights)
        emitted = (weights,) if self.emit else ()
        return (*out, *emitted, logp) if every is None else (*out, *emitted, logp, every)


def plan_graph(
    model: nn.Module,
    stack: Any,
    inputs: dict[str, torch.Tensor],
    bounds: dict[str, tuple[int, int]],
) -> Any:
    """The stages of a non-Sequential model (exit hooks detached; `stack` None: no exits, one
    stage) on example `inputs` (model input name -> tensor; "x" for one positional tensor),
    dynamic within `bounds` ({"batch": (lo, hi), "tokens": (lo, hi)})."""
    from ponder.export._stages.plan import MOE_TAU, ExitTail, Stage, StagePlan

    spec = stack.spec if stack is not None else {"block_paths": [], "exit_blocks": []}
    keyword = list(inputs) != ["x"]
    for name, value in inputs.items():
        if is_token_input(name, value) and value.shape[1] > bounds["tokens"][1]:
            raise ConfigError(
                f"sample input {name!r} has {value.shape[1]} tokens, more than the "
                f"{bounds['tokens'][1]} the stages are exported for; raise max_tokens "
                "(ponder export --max-tokens) or pass shorter samples"
            )
    dims = {name: Dim(name, min=lo, max=hi) for name, (lo, hi) in bounds.items()}
    dynamic = {
        name: {0: dims["batch"], **({1: dims["tokens"]} if is_token_input(name, value) else {})}
        for name, value in inputs.items()
    }
    paths = [spec["block_paths"][b] for b in spec["exit_blocks"]]
    layers = list(moe_layers(model).values())
    tau = None
    if layers and all(layer.gate == "dynamic_k" for layer in layers):
        tau = (MOE_TAU, torch.tensor([float(layers[0].gate_params["tau"])]), layers)
    cut = cut_graph(model, inputs, paths, dynamic, keyword=keyword, tau=tau)
    mask_name = "attention_mask" if "attention_mask" in inputs else None
    pooled = mask_name is not None and stack is not None and stack.pool.reads_mask
    stages = []
    exits = spec["exit_blocks"]
    for k, (body, ins, outs, found) in enumerate(
        zip(cut.modules, cut.inputs, cut.outputs, cut.dims, strict=True)
    ):
        early = k < len(exits)
        cascade_in = early and stack.ensembled and k > 0
        names, where, emit = list(ins), {}, False
        if early and pooled:
            # exit 0 pools from the mask (emitting the weights if more exits follow)
            source = POOL_WEIGHTS if k else mask_name
            if source not in names:
                names.append(source)
            where = {"weights" if k else "mask": names.index(source)}
            emit = k == 0 and len(exits) > 1
        names += [f"head_logits_{k - 1}"] if cascade_in else []
        tail = ExitTail(stack, k) if early else None
        module = GraphStage(body, tail, len(ins), cascade_in, emit=emit, **where)
        outputs = list(outs) + [POOL_WEIGHTS] * emit + ([f"exit_logp_{k}"] if early else [])
        outputs += [f"head_logits_{k}"] if early and stack.ensembled else []
        blocks = list(
            range(exits[k - 1] + 1 if k else 0, exits[k] + 1 if early else len(spec["block_paths"]))
        )
        stage_dims = {n: {i: d for i, d in found.get(n, {}).items() if i} for n in names}
        if mask_name in names and mask_name not in found:
            stage_dims[mask_name] = {1: "tokens"}
        if POOL_WEIGHTS in names:
            stage_dims[POOL_WEIGHTS] = {2: "tokens"}
        stages.append(Stage(module, names, outputs, blocks, early, stage_dims))
    if stack is not None:
        classes, family = spec["classes"], spec["family"]
    else:  # no exits: one stage, the whole model; its logits say how many classes
        with torch.no_grad():
            first = [inputs[n] if n in inputs else tau[1] for n in cut.inputs[0]]
            classes = int(cut.modules[0](*first)[0].shape[-1])
        family = type(model).__name__
    plan = StagePlan(stages, list(inputs), classes, family)
    if tau is not None:
        plan.controls[MOE_TAU] = tau[1]
    blocks = [(s, b) for s, stage in enumerate(stages) for b in stage.blocks]
    for path, layer in moe_layers(model).items():
        owner = [s for s, b in blocks if path.startswith(spec["block_paths"][b] + ".")]
        plan.moe_stages.append((owner[0] if owner else 0, layer))
    plan.bounds = bounds
    return plan


def is_token_input(name: str, value: torch.Tensor) -> bool:
    """Token ids and masks [B, T] (integer tensors, or any `*mask`): their dim 1 is dynamic
    (bundles, split bundles and the split model's trace all decide it here)."""
    integer = not torch.is_floating_point(value)
    return value.dim() == 2 and (integer or name.endswith("mask"))
