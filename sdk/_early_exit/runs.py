"""Per-forward state of an exit run: `Run` collects every exit, `AdaptiveRun` lets samples leave."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ponder._core.rules import ExitRule, select


class AllExited(Exception):
    """Raised from a hook when no sample is left, to skip the rest of the forward pass."""


class Run:
    """Collects what every exit computes for the whole batch (evaluation and training)."""

    def __init__(self, batch: int, features_only: bool = False):
        self.batch = batch
        self.features_only = features_only
        self.alive: np.ndarray | None = None  # rows still running, as original batch indices
        self.feats: list[torch.Tensor] = []  # pooled features per exit (features_only)
        self.prev_logits: torch.Tensor | None = None  # feeds the ZTW cascade
        self.head_logits: list[torch.Tensor] = []  # per early exit [b, C], for ZTW ensembles
        self.exit_logps: list[torch.Tensor] = []  # per exit [B, C], ensembled for ZTW
        self.final_logits: torch.Tensor | None = None  # the model's own head, [B, C]

    def on_exit(self, k: int, exit_logp: torch.Tensor) -> torch.Tensor | None:
        """Called by exit k; returns a bool row mask to continue with, or None for all rows."""
        self.exit_logps.append(exit_logp)
        return None


class AdaptiveRun(Run):
    """Applies an exit rule at each exit; rows that exit are recorded and leave the batch."""

    def __init__(self, batch: int, classes: int, rule: ExitRule, thresholds: Sequence[float]):
        super().__init__(batch)
        self.rule, self.thresholds = rule, np.asarray(thresholds, dtype=np.float64)
        self.state = rule.start(batch)
        self.alive = np.arange(batch)
        self.alive_index = torch.from_numpy(self.alive)
        self.exit_index = np.full(batch, -1, dtype=np.int64)
        self.logprobs = torch.zeros(batch, classes)

    def on_exit(self, k: int, exit_logp: torch.Tensor) -> torch.Tensor | None:
        scores, pred_logp = self.rule.step(exit_logp.numpy(), self.state)  # [b], [b, C]
        leave = scores >= self.thresholds[k]  # [b]
        if not leave.any():
            return None
        self._record(k, leave, pred_logp)
        keep = ~leave
        self.alive = self.alive[keep]
        self.alive_index = torch.from_numpy(self.alive)
        self.state = select(self.state, keep)
        rows = torch.from_numpy(keep)
        self.prev_logits = self.prev_logits[rows]
        self.head_logits = [t[rows] for t in self.head_logits]
        return rows

    def finish(self, final_logits: torch.Tensor) -> None:
        """The model's own head is the last exit: every row still running leaves there."""
        k = len(self.thresholds)
        final_logp = torch.log_softmax(final_logits.float(), dim=-1).numpy()
        _, pred_logp = self.rule.step(final_logp, self.state)
        self._record(k, np.ones(len(self.alive), dtype=bool), pred_logp)

    def _record(self, k: int, leave: np.ndarray, pred_logp: np.ndarray) -> None:
        rows = self.alive[leave]
        self.exit_index[rows] = k
        self.logprobs[torch.from_numpy(rows)] = torch.from_numpy(
            np.ascontiguousarray(pred_logp[leave])
        )
