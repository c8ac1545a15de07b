"""Recording FFN activations with forward hooks: the squared Hoyer measure per token (kept
differentiable for the penalty) and near-zero shares, per FFN, padding tokens excluded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ponder._core.errors import ConfigError, UnsupportedModelError
from ponder._core.report import format_table
from ponder._sparsity.activations import list_activation_kinds, select_activations

__all__ = ["ActivationRecorder", "LayerSparsity", "SparsityReport", "hoyer", "sparsity_shares"]

# |a| <= max/d, max taken per token over the FFN's hidden units
DIVISORS = (10, 100, 1000)


def hoyer(a: torch.Tensor) -> torch.Tensor:
    """Squared Hoyer measure ‖a‖₁² / ‖a‖₂² of each row of `a` [N, H] -> [N], differentiable.

    It is the effective number of active units: 1 for a one-hot row, H for a constant row; an
    all-zero row counts 0 (fully sparse).
    """
    a = a.float()
    l1 = a.abs().sum(-1)  # [N]
    l2sq = a.pow(2).sum(-1)  # [N]
    return l1.pow(2) / l2sq.clamp_min(torch.finfo(a.dtype).tiny)


def _counts(a: torch.Tensor) -> torch.Tensor:
    """Entries of `a` [N, H] with |a| <= max/10, max/100, max/1000 (max per row), and == 0: [4]."""
    mag = a.detach().abs()
    peak = mag.amax(-1, keepdim=True)  # [N, 1]
    near = [(mag <= peak / d).sum() for d in DIVISORS]
    return torch.stack([*near, (mag == 0).sum()]).double()


def sparsity_shares(a: torch.Tensor) -> dict[str, float]:
    """Shares of the entries of `a` [N, H] near zero (|a| <= row max / d) and exactly zero."""
    counts = (_counts(a) / a.numel()).tolist()
    return dict(zip(_SHARE_NAMES, counts, strict=True))


_SHARE_NAMES = ("below_10", "below_100", "below_1000", "zero")


@dataclass(frozen=True)
class LayerSparsity:
    """One FFN activation's figures over the recorded tokens.

    below_d: share of activations with |a| <= (that token's max |a|) / d; zero: share exactly 0;
    hoyer: mean over tokens of ‖a‖₁² / ‖a‖₂² (of `width`; lower is sparser).
    """

    path: str
    kind: str
    tokens: int
    width: int
    hoyer: float
    below_10: float
    below_100: float
    below_1000: float
    zero: float


@dataclass(frozen=True)
class SparsityReport:
    """Activation sparsity per FFN and overall (shares weighted by entries, hoyer/H averaged)."""

    layers: tuple[LayerSparsity, ...]

    HEADERS = ("ffn", "kind", "tokens", "hoyer/H", "<=max/10", "<=max/100", "<=max/1000", "==0")

    def overall(self) -> dict[str, float]:
        """Shares over all FFNs' entries together, and the mean over FFNs of hoyer / width."""
        entries = [layer.tokens * layer.width for layer in self.layers]
        total = max(sum(entries), 1)
        pairs = list(zip(self.layers, entries, strict=True))
        out = {name: sum(getattr(x, name) * n for x, n in pairs) / total for name in _SHARE_NAMES}
        out["hoyer_frac"] = sum(x.hoyer / x.width for x in self.layers) / max(len(self.layers), 1)
        return out

    def rows(self) -> list[list[object]]:
        """Rows for `format_table(SparsityReport.HEADERS, report.rows())`, last row all FFNs."""
        rows: list[list[object]] = [
            [x.path, x.kind, x.tokens, x.hoyer / x.width, *(getattr(x, n) for n in _SHARE_NAMES)]
            for x in self.layers
        ]
        o = self.overall()
        rows.append(["all", "", "", o["hoyer_frac"]])
        rows[-1].extend(o[n] for n in _SHARE_NAMES)
        return rows

    def table(self) -> str:
        return format_table(self.HEADERS, self.rows())

    def to_dict(self) -> dict:
        return {
            "threshold": "below_d: share of |a| <= max|a|/d, max taken per token over the FFN",
            "layers": [asdict(x) for x in self.layers],
            "overall": self.overall(),
        }


class _Tally:
    """Running sums for one FFN: tokens, entries, hoyer sum, near-zero/zero counts."""

    def __init__(self) -> None:
        self.tokens, self.width, self.hoyer_sum = 0, 0, 0.0
        self.counts = torch.zeros(4, dtype=torch.float64)

    def add(self, a: torch.Tensor, h: torch.Tensor) -> None:
        self.tokens += a.shape[0]
        self.width = a.shape[1]
        self.hoyer_sum += float(h.detach().sum())
        self.counts += _counts(a).cpu()

    def result(self, path: str, kind: str) -> LayerSparsity:
        shares = (self.counts / max(self.tokens * self.width, 1)).tolist()
        mean_hoyer = self.hoyer_sum / max(self.tokens, 1)
        return LayerSparsity(path, kind, self.tokens, self.width, mean_hoyer, *shares)


class ActivationRecorder:
    """Context manager: forward hooks on a model's FFN activation modules that record, per FFN,
    the squared Hoyer measure per token and the near-zero shares of what the activation outputs.

        with ActivationRecorder(model) as rec:
            rec.token_mask = batch["attention_mask"]  # [B, T]; tokens where it is 0 are skipped
            model(**batch)
        print(rec.report().table())

    Activations may be [B, T, H] (with a [B, T] mask), [B, H] (with a [B] mask) or anything
    [..., H] whose leading dimensions the mask matches. With `keep_graph=True` the per-token
    Hoyer values keep their autograd graph for `hoyer_penalty`, which consumes them.
    """

    def __init__(
        self, model: nn.Module, paths: Iterable[str] | None = None, keep_graph: bool = False
    ):
        found = select_activations(model, paths)
        if not found:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no activation module ponder knows "
                f"({', '.join(list_activation_kinds())}: torch's nn.ReLU/GELU/SiLU or transformers' "
                "activation classes); an FFN that calls F.gelu in its forward must hold the "
                "activation as a module (e.g. nn.GELU) to be recorded"
            )
        self.model, self.keep_graph = model, keep_graph
        self.token_mask: torch.Tensor | None = None
        # a module shared by several paths is hooked once, under its first path
        self._modules: dict[int, tuple[str, nn.Module, str]] = {}
        for path, module, kind in found:
            self._modules.setdefault(id(module), (path, module, kind))
        self._handles: list = []
        self.reset()

    @property
    def paths(self) -> list[str]:
        return [path for path, _, _ in self._modules.values()]

    def reset(self) -> None:
        """Forget the statistics and the penalty terms recorded so far."""
        self._tallies = {path: _Tally() for path in self.paths}
        self._terms: dict[str, list[torch.Tensor]] = {path: [] for path in self.paths}

    def __enter__(self) -> ActivationRecorder:
        for path, module, _ in self._modules.values():
            self._handles.append(module.register_forward_hook(self._hook(path)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, path: str):
        def hook(module: nn.Module, args, output) -> None:
            if isinstance(output, torch.Tensor):
                self._record(path, output)

        return hook

    def _record(self, path: str, a: torch.Tensor) -> None:
        rows = self._token_rows(path, a)  # [N, H]
        h = hoyer(rows)  # [N]
        self._tallies[path].add(rows, h)
        if self.keep_graph:
            self._terms[path].append(h)

    def _token_rows(self, path: str, a: torch.Tensor) -> torch.Tensor:
        """The activations of the unmasked tokens: [..., H] -> [N, H]."""
        rows = a.reshape(-1, a.shape[-1])  # [tokens, H]
        if self.token_mask is None:
            return rows
        keep = self.token_mask.reshape(-1).to(a.device) != 0  # [tokens]
        if keep.numel() != rows.shape[0]:
            raise ConfigError(
                f"the token mask has {keep.numel()} entries (shape "
                f"{tuple(self.token_mask.shape)}) but the activations at {path!r} have shape "
                f"{tuple(a.shape)}, i.e. {rows.shape[0]} tokens; give a [B, T] mask for "
                "[B, T, H] activations or a [B] mask for [B, H]"
            )
        return rows[keep]

    def take_terms(self) -> dict[str, list[torch.Tensor]]:
        """The per-token Hoyer tensors [N] recorded (with graph) since the last take, per FFN."""
        terms, self._terms = self._terms, {path: [] for path in self.paths}
        return terms

    def report(self) -> SparsityReport:
        """Sparsity of everything recorded since the last `reset()`."""
        return SparsityReport(
            tuple(self._tallies[p].result(p, kind) for p, _, kind in self._modules.values())
        )
