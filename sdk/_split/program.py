"""A split model cut in two at its split block, with token selection on the device.

`split_model(model, example_inputs)` traces the converted model once (`torch.export`, as the
bundles do) and cuts its graph after the split block: the *edge* half runs the embeddings and
the blocks up to the split and also returns the split block's attention inputs (queries, keys,
mask); the *tail* half runs the rest from the hidden state and the attention mask alone (masks
and positions the model builds from its inputs are rebuilt there for the tokens it gets). In
between, each sample keeps its pooling token and the top-ranked share `keep` of its other real
tokens, in their original order, and the kept tokens cross the link: one real payload per
sample (codec, positions), decoded, padded into a batch with its new attention mask.

The halves are graph modules over the model's own parameters, so training a `SplitModel`
trains the model (split fine-tuning: the gradient at the split crosses the link back through
the same codec).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.export import Dim

from ponder._convert.blocks import find_blocks
from ponder._core.errors import ConfigError, UnsupportedModelError
from ponder._split.link import SplitLink, send, split_link
from ponder.runtime._offload.split import select_tokens as numpy_select

__all__ = ["SplitModel", "attention_ranking", "select_tokens", "split_model"]

_SDPA = torch.ops.aten.scaled_dot_product_attention.default
_SOFTMAX = (torch.ops.aten.softmax.int, torch.ops.aten._softmax.default)
MASK = "attention_mask"
MAX_TOKENS = 512


@dataclass(frozen=True)
class _Attention:
    """How the edge half returns the split block's attention: "sdpa" (queries, keys and the
    mask or None; with the call's scale and causal flag) or "probs" (the softmax output)."""

    kind: str
    count: int  # outputs the edge appends for it
    scale: float | None = None
    causal: bool = False


class SplitModel(nn.Module):
    """The edge and tail halves of a split model, and the link between them."""

    def __init__(
        self,
        edge: fx.GraphModule,
        tail: fx.GraphModule,
        names: tuple[list[str], list[str], list[str]],
        attention: _Attention,
        link: SplitLink,
        anchor: str,
    ):
        super().__init__()
        self.edge, self.tail = edge, tail
        self.edge_inputs, self.edge_outputs, self.tail_inputs = names
        self.attention, self.anchor = attention, anchor
        # the model's own link (a submodule without parameters): the split model shares its
        # config and its byte counts with the model it was cut from
        self.link = link
        # kept positions [B, K] of the last call, and which of them are real (not padding)
        self.last_index: torch.Tensor | None = None
        self.last_kept: torch.Tensor | None = None

    @property
    def config(self) -> Any:
        return self.link.config

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        missing = [n for n in self.edge_inputs if n not in inputs]
        if missing:
            raise ConfigError(f"missing inputs {missing}; this model takes {self.edge_inputs}")
        out = self.edge(*[inputs[n] for n in self.edge_inputs])
        hidden, count = out[0], self.attention.count
        mask = inputs.get(MASK)
        real = (mask != 0) if mask is not None else hidden.new_ones(hidden.shape[:2], dtype=bool)
        if self.config.keep < 1:
            scores = attention_ranking(
                self.attention_probs(out[len(out) - count :], real), real,
                self.config.selector, self.anchor,
            )  # fmt: skip
        else:
            scores = real.float()
        index, kept = select_tokens(scores, real, self.config.keep, self.anchor)
        self.last_index, self.last_kept = index, kept
        tokens = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        sent = send(self.link, tokens, kept, index if self.config.keep < 1 else None)
        args = {self.edge_outputs[0]: sent}
        if MASK in self.tail_inputs:
            args[MASK] = kept.to(mask.dtype if mask is not None else torch.long)
        return self.tail(*[args[n] for n in self.tail_inputs])[0]

    def attention_probs(self, parts: tuple[torch.Tensor, ...], real: torch.Tensor) -> torch.Tensor:
        """The split block's attention [B, T, T] (query, key), averaged over heads."""
        a = self.attention
        if a.kind == "probs":  # [B, H, T, T], or [B * H, T, T] (nn.MultiheadAttention)
            t = real.shape[1]
            return parts[0].float().reshape(real.shape[0], -1, t, t).mean(1)
        q, k = parts[0].float(), parts[1].float()
        scale = a.scale if a.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        logits = q @ k.transpose(-1, -2) * scale  # [B, H, T, T]
        allowed = real[:, None, None, :]
        if a.count > 2 and parts[2] is not None:
            m = parts[2]
            if m.dtype == torch.bool:
                allowed = allowed & m
            else:
                logits = logits + m.float()
        if a.causal:
            t = q.shape[-2]
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~allowed, float("-inf"))
        return torch.softmax(logits, -1).nan_to_num(0.0).mean(1)


def attention_ranking(
    probs: torch.Tensor, real: torch.Tensor, selector: str, anchor: str
) -> torch.Tensor:
    """Scores [B, T] from head-averaged attention `probs` [B, T, T]: "cls", the row of the
    pooling token (token 0, or each sample's last real token when `anchor` is "last");
    "received", the column mean over real query tokens."""
    if selector == "received":
        weights = real.float()[:, :, None]  # [B, T, 1] over queries
        return (probs * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    rows = _anchor_positions(real, anchor)
    return probs[torch.arange(probs.shape[0]), rows]


def _anchor_positions(real: torch.Tensor, anchor: str) -> torch.Tensor:
    """[B] the pooling token of each sample: 0 (class token), or its last real token."""
    if anchor == "last":
        positions = torch.arange(real.shape[1], device=real.device).expand_as(real)
        return torch.where(real, positions, -1).amax(1).clamp(min=0)
    return torch.zeros(real.shape[0], dtype=torch.long, device=real.device)


def select_tokens(
    scores: torch.Tensor, real: torch.Tensor, keep: float, anchor: str = "first"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, its pooling token and the top-scored others among its real tokens, `keep`
    of them in all (rounded up, at least one), in their original order: the runtime's numpy
    selection (`ponder.runtime`), so that a device picks exactly what this model picks.

    Returns index [B, K] (K: the most any sample keeps) and kept [B, K] (False on padding
    slots). A padding slot points at one of the sample's padding positions where it has one,
    so that gathering any per-token input along `index` also pads it as the input was padded.
    """
    index, kept = numpy_select(
        scores.detach().float().cpu().numpy(), real.cpu().numpy(), keep, anchor
    )
    return torch.from_numpy(index).to(real.device), torch.from_numpy(kept).to(real.device)


def split_model(model: nn.Module, example_inputs: dict[str, torch.Tensor]) -> SplitModel:
    """`model` (converted with `ponder.SplitConfig`) cut in two at its split block, on keyword
    `example_inputs` (a tokenizer's batch for text models, {"pixel_values": x} or
    {"x": images} for a ViT taking one positional tensor)."""
    from ponder.export._stages.graph import is_token_input
    from ponder.export._stages.plan import max_positions

    link = split_link(model)
    if not isinstance(example_inputs, dict) or not example_inputs:
        raise ConfigError(
            "example_inputs must be a dict of keyword tensors, e.g. a tokenizer batch"
        )
    keyword = list(example_inputs) != ["x"]
    longest = min(MAX_TOKENS, max_positions(model))
    batch, tokens = Dim("batch", min=1, max=1024), Dim("tokens", min=1, max=longest)
    dynamic = {}
    for name, value in example_inputs.items():
        dims = {0: batch}
        if is_token_input(name, value):
            dims[1] = tokens
        dynamic[name] = dims
    link.bypass = True
    try:
        return _cut(model, example_inputs, link, dynamic, keyword)
    finally:
        link.bypass = False
        link.forget_call()  # tracing left fake tensors there


def _cut(
    model: nn.Module, example_inputs: dict, link: SplitLink, dynamic: dict, keyword: bool
) -> SplitModel:
    from ponder.export._stages.graph import cut_graph

    path = link.spec["block_path"]
    cut = cut_graph(model, example_inputs, [path], dynamic, keyword=keyword, recompute=True)
    edge, tail = cut.modules
    hidden = cut.outputs[0][0]
    tail_inputs = cut.inputs[1]
    if 1 not in cut.dims[1].get(hidden, {}):
        # the token count is fixed in this trace (a ViT's patches): trace the tail again
        # from a hidden state with a dynamic token count
        tail, tail_inputs = _tail_for_any_tokens(model, example_inputs, path, dynamic, keyword)
        hidden = HIDDEN
    extra = [n for n in tail_inputs if n not in (hidden, MASK)]
    if extra:
        raise UnsupportedModelError(
            f"the blocks after the split of {type(model).__name__} read {extra} besides the "
            "hidden state and the attention mask (a Hugging Face *ForSequenceClassification "
            "finding the last token from input_ids does); the cloud half would need them sent. "
            "Split the base model and put the head on its pooled output instead"
        )
    attention = _expose_attention(edge, path)
    names = (cut.inputs[0], [hidden, *cut.outputs[0][1:]], tail_inputs)
    anchor = "last" if find_blocks(model, link.config.blocks).pooling == "last" else "first"
    return SplitModel(edge, tail, names, attention, link, anchor)


HIDDEN = "split_hidden"


class _Override(nn.Module):
    """The model with the split block's output replaced by the input `split_hidden`: traced,
    what follows the block sees a token count of its own."""

    def __init__(self, model: nn.Module, block: nn.Module, keyword: bool):
        super().__init__()
        self.model, self.keyword = model, keyword
        self.block = [block]  # a list: already a submodule of `model`

    def forward(self, **inputs: torch.Tensor) -> Any:
        hidden = inputs.pop(HIDDEN)

        def replace(module: nn.Module, args: Any, output: Any) -> Any:
            return (hidden, *output[1:]) if isinstance(output, tuple | list) else hidden

        handle = self.block[0].register_forward_hook(replace)
        try:
            return self.model(**inputs) if self.keyword else self.model(*inputs.values())
        finally:
            handle.remove()


def _tail_for_any_tokens(
    model: nn.Module, inputs: dict[str, torch.Tensor], path: str, dynamic: dict, keyword: bool
) -> tuple[fx.GraphModule, list[str]]:
    from ponder.export._stages.graph import cut_graph, sizes_from_hidden

    block = model.get_submodule(path)
    with torch.no_grad():
        out = _Override(model, block, keyword)  # run once for the hidden state's shape
        captured = {}
        handle = block.register_forward_hook(
            lambda m, a, o: captured.setdefault("h", o[0] if isinstance(o, tuple | list) else o)
        )
        try:
            model(**inputs) if keyword else model(*inputs.values())
        finally:
            handle.remove()
    traced = {**inputs, HIDDEN: captured["h"]}
    batch = dynamic[next(iter(dynamic))][0]
    shapes = {**dynamic, HIDDEN: {0: batch, 1: Dim("kept", min=1, max=MAX_TOKENS)}}
    cut = cut_graph(out, traced, [f"model.{path}"], shapes, keyword=True, recompute=True)
    tail, names = cut.modules[1], list(cut.inputs[1])
    sizes_from_hidden(tail.graph, names, HIDDEN)
    tail.recompile()
    return tail, names


def _expose_attention(edge: fx.GraphModule, path: str) -> _Attention:
    """Make the edge half also return the split block's attention inputs (the last attention
    call inside the block): queries, keys and mask for scaled_dot_product_attention, else the
    softmax output."""
    from ponder.export._stages.graph import in_block

    graph = edge.graph
    inside = [n for n in graph.nodes if n.op == "call_function" and in_block(n, path)]
    sdpa = [n for n in inside if n.target is _SDPA]
    softmax = [n for n in inside if n.target in _SOFTMAX]
    output = next(n for n in graph.nodes if n.op == "output")
    results = tuple(output.args[0])
    if sdpa:
        call = sdpa[-1]
        q, k = call.args[0], call.args[1]
        mask = call.args[3] if len(call.args) > 3 else call.kwargs.get("attn_mask")
        causal = bool(call.args[5] if len(call.args) > 5 else call.kwargs.get("is_causal", False))
        scale = call.kwargs.get("scale")
        parts = (q, k) + ((mask,) if isinstance(mask, fx.Node) else ())
        attention = _Attention("sdpa", len(parts), scale, causal)
    elif softmax:
        parts = (softmax[-1],)
        attention = _Attention("probs", 1)
    else:
        raise UnsupportedModelError(
            f"found no attention (scaled_dot_product_attention or softmax) inside the split "
            f"block {path!r}: token selection ranks tokens by that block's attention"
        )
    output.args = (results + parts,)
    edge.recompile()
    return attention
