"""The exit stack: heads attached to a model's blocks through forward hooks.

With no run active the hooks do nothing, so `model(x)` computes exactly what it did before
conversion. A run (`collect` or `adaptive`) makes each hooked block feed its exit head; an
adaptive run also drops the samples that exit from the batch so later blocks see fewer rows,
and puts the rows still running back into a full batch after the last block (see `_restore`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from ponder._convert.surgery import get_module
from ponder._core.errors import ConfigError, PonderError
from ponder._early_exit.heads import ExitHead, GeometricEnsemble, Pool
from ponder._early_exit.runs import AllExited, Run

ATTR = "ponder_exits"  # where the stack lives on a converted model


class ExitStack(nn.Module):
    """Exit heads (and ZTW ensembles) for one model, plus the hooks that drive them.

    `spec` holds the resolved, JSON-plain facts needed to rebuild the stack: the block paths,
    which blocks carry exits, feature widths, class count and pooling.
    """

    def __init__(self, config: Any, spec: dict[str, Any]):
        super().__init__()
        self.config, self.spec = config, spec
        classes, widths = spec["classes"], spec["widths"]
        cascade = config.style == "ztw"
        self.pool = Pool(spec["pooling"])
        self.heads = nn.ModuleList(
            ExitHead(w, classes, config.head, config.head_hidden, cascade and i > 0)
            for i, w in enumerate(widths)
        )
        self.ensembles = (
            nn.ModuleList(GeometricEnsemble(i + 1, classes) for i in range(len(widths)))
            if cascade
            else None
        )
        self._run: Run | None = None
        self._handles: list[RemovableHandle] = []  # hooks `attach` put on the model
        self._mask: torch.Tensor | None = None  # the run's token mask [b, T], rows still running

    @property
    def num_exits(self) -> int:
        """Exits including the model's own final head."""
        return len(self.heads) + 1

    @property
    def ensembled(self) -> bool:
        return self.ensembles is not None

    def attach(self, model: nn.Module) -> None:
        """Register the hooks on `model`'s blocks (not saved with the weights; redone on load).
        Their handles are kept, so `detach` removes these hooks and no one else's."""
        paths, exits = self.spec["block_paths"], self.spec["exit_blocks"]
        hooks = self._handles
        for k, b in enumerate(exits):
            hooks.append(
                get_module(model, paths[b]).register_forward_hook(functools.partial(self._after, k))
            )
        for path in paths[exits[0] + 1 :]:
            hooks.append(
                get_module(model, path).register_forward_pre_hook(self._before, with_kwargs=True)
            )
        if not isinstance(model, nn.Sequential):
            # an nn.Sequential hands its later modules nothing but the hidden state, so its tail
            # may run on the rows still running alone (see `_restore`)
            hooks.append(get_module(model, paths[-1]).register_forward_hook(self._restore))

    def detach(self) -> None:
        """Remove the hooks `attach` registered (a deep copy of the model keeps its own handles,
        bound to the copy). The heads stay; exits no longer run until `attach` again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def token_mask(self) -> torch.Tensor | None:
        """The active run's token mask [b, T] for the rows still running (None outside a run,
        or for inputs without one)."""
        return self._mask

    @contextlib.contextmanager
    def running(self, run: Run, token_mask: torch.Tensor | None = None) -> Iterator[Run]:
        """Make `run` the active one; `token_mask` [B, T] (1 = real token) lets the heads pool
        over real tokens only (see `Pool`)."""
        if self._run is not None:
            raise PonderError(
                "an exit run is already active on this model: ponder.infer and exit_outputs "
                "cannot be called from inside the model's own forward pass or from two threads "
                "at once; use a copy of the model per thread"
            )
        self._run, self._mask = run, token_mask
        try:
            yield run
        finally:
            self._run, self._mask = None, None

    def exit_step(self, k: int, feats: torch.Tensor, run: Run) -> torch.Tensor:
        """Head k on pooled features [b, D] -> the exit's log-probs [b, C] (ensembled for ZTW).

        The per-sample hot path: `.forward` skips nn.Module's call machinery (hooks on our own
        heads), which costs about as much as a small head at batch 1.
        """
        logits = self.heads[k].forward(feats, run.prev_logits)  # [b, C]
        run.prev_logits = logits
        run.head_logits.append(logits)
        if self.ensembles is None:
            return F.log_softmax(logits.float(), dim=-1)
        return self.ensembles[k].forward(run.head_logits)

    def _after(self, k: int, module: nn.Module, args: Any, output: Any) -> Any:
        run = self._run
        if run is None:
            return None
        hidden = output[0] if isinstance(output, tuple | list) else output
        mask = self._mask
        if mask is not None and mask.shape != hidden.shape[:2]:
            mask = None  # not this block's tokens (feature maps, or tokens added by the model)
        feats = self.pool.forward(hidden, mask)  # [b, D]
        if run.features_only:
            run.feats.append(feats)
            return None
        keep = run.on_exit(k, self.exit_step(k, feats, run))  # bool [b] or None
        if keep is None:
            return None
        if not keep.any():
            raise AllExited
        if self._mask is not None:
            self._mask = _rows(self._mask, keep, hidden.shape[0])
        return _rows(output, keep, hidden.shape[0])

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        run = self._run
        if run is None or run.alive is None or len(run.alive) == run.batch:
            return None
        # tensors built before the blocks (attention masks, ...) still have the full batch
        idx = run.alive_index
        args = tuple(_rows(a, idx, run.batch) for a in args)
        kwargs = {key: _rows(v, idx, run.batch) for key, v in kwargs.items()}
        return args, kwargs

    def _restore(self, module: nn.Module, args: Any, output: Any) -> Any:
        """After the last block: the rows still running, back in a batch of the original size.

        The model's own code after its blocks (final norm, pooling, head) may read what its
        forward computed before the blocks ran: GPT2ForSequenceClassification takes each row's
        last non-padding token from the full-batch `input_ids` and indexes the logits with
        `arange(batch)`. Those are locals of the model's forward (some only Python ints), out of
        reach of a hook, so slicing "every input the tail reads" cannot be done in general.
        Instead the tail runs on a batch of the size it expects: row i holds sample i's hidden
        state if it is still running, otherwise a copy of the first running row (real values,
        so no norm or check in the tail sees zeros), and `ponder.infer` keeps only the running
        rows of the logits. The blocks, where the compute is, still run only the rows left; the
        tail (a norm and a classifier, typically) costs B rows instead of b.
        """
        run = self._run
        if run is None or run.alive is None or len(run.alive) == run.batch:
            return None
        source = torch.zeros(run.batch, dtype=torch.long)  # [B] row of the output to copy
        source[run.alive_index] = torch.arange(len(run.alive))
        return _rows(output, source, len(run.alive))


def _rows(value: Any, index: torch.Tensor, batch: int) -> Any:
    """Rows `index` (a bool mask or row indices) of every tensor whose first dimension is
    `batch`, in tuples too."""
    if isinstance(value, torch.Tensor):
        return value[index] if value.dim() and value.shape[0] == batch else value
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_rows(v, index, batch) for v in value)
    return value


def get_stack(model: nn.Module) -> ExitStack:
    """The exit stack of a converted model, with a clear error for an unconverted one."""
    stack = getattr(model, ATTR, None)
    if not isinstance(stack, ExitStack):
        raise ConfigError(
            f"{type(model).__name__} has no early exits; convert it first with "
            "ponder.convert_(model, ponder.EarlyExitConfig(...))"
        )
    return stack
