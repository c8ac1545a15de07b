"""The compressed link at a split point, in eager torch: the block's output goes through the real
offload codec and payload functions (`ponder.runtime.encode_payload`/`decode_payload`) on its
way to the next block, so the model computes with exactly what the cloud half would receive,
and the gradient comes back through the same codec in training (split fine-tuning).

Each sample is its own payload, holding its real tokens only (padding is never sent); the link
records the bytes of every payload both ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ponder._core.errors import ConfigError
from ponder._early_exit.stack import ATTR as EXITS
from ponder._split.trace import traced_round_trip
from ponder.runtime import decode_payload, encode_payload
from ponder.runtime._offload.split import index_array

ATTR = "ponder_split"  # where the link lives on a converted model


@dataclass
class LinkBytes:
    """Payload bytes over the link: per sample of the latest forward pass (`last`) and of every
    pass since the last `reset` (`sent`), and totals both ways (`down`: device to cloud,
    activations; `up`: cloud to device, gradients)."""

    last: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    down: int = 0
    up: int = 0

    @property
    def samples(self) -> int:
        return len(self.sent)

    def reset(self) -> None:
        self.last, self.sent, self.down, self.up = [], [], 0, 0


class _Call:
    """What the model's pre-hook saw for the current forward pass: its attention_mask [B, T]
    (or None) and its exit stack. A plain object, not module state (torch.export would ask for
    a buffer if the link held the tensor itself)."""

    mask: torch.Tensor | None = None
    exits: Any = None


class SplitLink(nn.Module):
    """Sits after block `spec["block"]` of a converted model (a sidecar: no parameters)."""

    def __init__(self, config: Any, spec: dict[str, Any]):
        super().__init__()
        self.config, self.spec = config, spec
        self.bytes = LinkBytes()
        self._call = _Call()
        self.bypass = False  # True: the block's output passes as is (while cutting the graph)

    @property
    def params(self) -> dict[str, Any]:
        """What every payload carries for the receiver to check."""
        c = self.config
        return {
            "split_block": self.spec["block"], "codec": c.codec, "keep": c.keep,
            "selector": c.selector,
        }  # fmt: skip

    def attach(self, model: nn.Module, block: nn.Module) -> None:
        self._handles = [
            model.register_forward_pre_hook(self._inputs, with_kwargs=True),
            block.register_forward_hook(self._after),
        ]

    def detach(self) -> None:
        """Remove the hooks `attach` registered (a deep copy of the model has its own)."""
        for handle in getattr(self, "_handles", []):
            handle.remove()
        self._handles = []

    def forget_call(self) -> None:
        """Drop what the pre-hook kept of the latest forward pass."""
        self._call = _Call()

    def _inputs(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        self._call.mask, self._call.exits = mask, getattr(module, EXITS, None)

    def _token_mask(self, hidden: torch.Tensor) -> torch.Tensor:
        """Real tokens [b, T] of the rows reaching the split: during `ponder.infer` the exit
        stack's mask (rows that left at a device-side exit are gone), else the call's."""
        mask, stack = self._call.mask, self._call.exits
        if stack is not None and stack.token_mask is not None:
            mask = stack.token_mask
        if mask is None or mask.shape != hidden.shape[:2]:
            return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return mask != 0

    def _after(self, module: nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple | list) else output
        if hidden.dim() != 3:
            raise ConfigError(
                f"the split block's output is {tuple(hidden.shape)}; a split sends tokens "
                "[batch, tokens, width]: split a transformer after one of its blocks"
            )
        if self.bypass:
            return None
        if self.config.keep < 1:
            raise ConfigError(
                f"keep={self.config.keep} sends only some tokens, so the blocks after the split "
                "see fewer of them: run the model as ponder.split_model(model, example_inputs), "
                "which cuts it in two at the split"
            )
        real = self._token_mask(hidden)
        if torch.compiler.is_compiling():  # torch.export: the codec as graph ops
            sent = traced_round_trip(hidden, real, self.config.codec).to(hidden.dtype)
        else:
            sent = send(self, hidden, real)
        if isinstance(output, tuple | list):
            return type(output)((sent, *output[1:]))
        return sent

    def round_trip(
        self,
        values: torch.Tensor,
        real: torch.Tensor,
        way: str,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`values` [B, T, D] through one payload per sample (its `real` tokens), decoded; the
        padded positions come back as zeros, as nothing was sent for them. `index` [B, T]: the
        tokens' positions in the input, sent with them (token selection; activations only)."""
        c = self.config
        out = torch.zeros_like(values)
        sizes = []
        x = values.detach().float().cpu().numpy()
        keep = real.cpu().numpy()
        positions = index.cpu().numpy() if index is not None and way == "down" else None
        for b in range(x.shape[0]):
            extra = None
            if positions is not None:
                extra = {"index": index_array(positions[b, keep[b]])}
            data = encode_payload(
                {"tokens": x[b, keep[b]][None]}, c.codec, extra=extra, params=self.params,
                zstd_level=c.zstd_level,
            )  # fmt: skip
            payload = decode_payload(data, expect=self.params)
            tokens = payload.tensors["tokens"][0]
            if positions is not None and not np.array_equal(
                payload.tensors["index"], positions[b, keep[b]]
            ):
                raise AssertionError("the token positions did not survive the payload")
            out[b, torch.from_numpy(keep[b])] = torch.from_numpy(tokens).to(out)
            sizes.append(len(data))
        if way == "down":
            self.bytes.last = sizes
            self.bytes.sent += sizes
            self.bytes.down += sum(sizes)
        else:
            self.bytes.up += sum(sizes)
        return out


class _Link(torch.autograd.Function):
    """Forward: activations through the codec; backward: the gradient through the same codec."""

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        real: torch.Tensor,
        link: SplitLink,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ctx.link = link
        ctx.save_for_backward(real)
        return link.round_trip(hidden, real, "down", index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (real,) = ctx.saved_tensors
        return ctx.link.round_trip(grad, real, "up"), None, None, None


def send(
    link: SplitLink, hidden: torch.Tensor, real: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """`hidden` [B, T, D] as the cloud receives it over `link` (and, in training, its gradient
    as the device receives it back)."""
    return _Link.apply(hidden, real, link, index)


def bytes_per_sample(model: nn.Module) -> np.ndarray:
    """Payload bytes each sample of `model`'s latest forward pass sent over its split link."""
    return np.asarray(split_link(model).bytes.last, np.int64)


def without_split(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with its split link removed (hooks and sidecar): the model as
    converted before the split, which runs whole on one device."""
    import copy

    clone = copy.deepcopy(model)
    link = getattr(clone, ATTR, None)
    if link is not None:
        link.detach()
        delattr(clone, ATTR)
    return clone


def split_link(model: nn.Module) -> SplitLink:
    link = getattr(model, ATTR, None)
    if link is None:
        raise ConfigError("this model has no split; convert it with ponder.SplitConfig first")
    return link
