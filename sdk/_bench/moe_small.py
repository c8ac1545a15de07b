"""D2DMoE on a small classifier trained from scratch on MNIST-1D, where accuracy is the metric:
test accuracy against FFN FLOPs executed over dynamic-k τ and top-k k, and the two at equal
FLOPs."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ponder._bench.moe_eval import quality_at_flops
from ponder._convert.convert import convert_
from ponder._core.report import format_table, write_json
from ponder._moe.config import MoEConfig, moe_layers, set_gate_
from ponder._moe.router import train_routers
from ponder.data.datasets import Split, batches, load_mnist1d
from ponder.models.fit import train_classifier

__all__ = ["ResidualMLPClassifier", "run_small_moe"]

DEFAULT_TAUS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
# top-k settings as shares of a layer's experts, so the curve spans the same FLOPs as τ's
TOP_K_SHARES = (1 / 64, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
EQUAL_FLOPS = (0.3, 0.5, 0.7)
MAX_DROP_PP = 1.0  # "as good as dense": test accuracy within 1 percentage point


class _Block(nn.Module):
    """Pre-norm residual block x + mlp(ln(x)); `mlp` is the plain Sequential FFN ponder finds."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.ln(x))  # [B, D]


class ResidualMLPClassifier(nn.Module):
    """Flatten -> Linear embedding -> `depth` residual ReLU MLP blocks -> LayerNorm -> logits.

    ReLU makes the FFNs naturally sparse; only the blocks' `mlp`s are dense FFNs to convert.
    """

    def __init__(self, inputs=40, width=128, hidden=512, depth=3, classes=10):
        super().__init__()
        self.embed = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(_Block(width, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B=batch, L=signal length, D=width
        h = self.embed(x.flatten(1))  # [B, 1, L] -> [B, D]
        for block in self.blocks:
            h = block(h)  # [B, D]
        return self.head(self.norm(h))  # [B, classes]


@torch.no_grad()
def _measure(model: nn.Module, split: Split, batch_size: int = 1024) -> dict[str, Any]:
    """Test accuracy and FFN FLOPs fraction: experts that ran / experts, averaged over layers
    and samples (all experts have the same size, so FLOPs scale with the experts run)."""
    layers = moe_layers(model)
    used = {path: 0 for path in layers}
    correct = 0
    model.eval()
    for x, y in batches(split, batch_size):
        correct += int((model(x).argmax(dim=1) == y).sum())
        for path, layer in layers.items():
            used[path] += int(layer.last_mask.sum())  # last_mask [B, E]
    per_layer = [used[p] / (len(split) * layer.num_experts) for p, layer in layers.items()]
    return {
        "accuracy": correct / len(split),
        "flops_fraction": sum(per_layer) / len(per_layer),
        "per_layer_flops_fraction": per_layer,
    }


def _sweep(model, split, taus, ks, dense_acc, progress) -> dict[str, list[dict[str, Any]]]:
    from tqdm.auto import tqdm

    settings = [("dynamic_k", "tau", t) for t in taus] + [("top_k", "k", k) for k in ks]
    rows: dict[str, list[dict[str, Any]]] = {"dynamic_k": [], "top_k": []}
    for gate, knob, value in tqdm(settings, desc="gate sweep", disable=None if progress else True):
        set_gate_(model, gate, **{knob: value})
        row = {knob: value, **_measure(model, split)}
        row["drop_pp"] = round(100 * (dense_acc - row["accuracy"]), 6)  # no float noise at 1 pp
        rows[gate].append(row)
    return rows


def _best(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The point with the lowest FLOPs fraction within MAX_DROP_PP of dense accuracy."""
    ok = [r for r in rows if r["drop_pp"] <= MAX_DROP_PP]
    return min(ok, key=lambda r: r["flops_fraction"]) if ok else None


def _summarise(result: dict[str, Any]) -> None:
    curves = result["curves"]
    result["best_within_1pp"] = {gate: _best(rows) for gate, rows in curves.items()}
    result["equal_flops"] = [
        {
            "flops_fraction": f,
            **{g: quality_at_flops(curves[g], f, "accuracy") for g in ("dynamic_k", "top_k")},
        }
        for f in EQUAL_FLOPS
    ]


def _tables(result: dict[str, Any]) -> str:
    dense = result["dense"]["test_acc"]
    out = [
        f"small model: {result['model']}, MNIST-1D {result['samples']} samples, dense test "
        f"accuracy {dense:.4f} (train {result['dense']['train_acc']:.4f}, "
        f"{result['dense']['seconds']:.1f} s), {result['experts']} experts of "
        f"{result['expert_size']} per FFN, routers {result['router_seconds']:.1f} s",
    ]
    for gate, rows in result["curves"].items():
        knob = "tau" if gate == "dynamic_k" else "k"
        body = [[r[knob], r["flops_fraction"], r["accuracy"], r["drop_pp"]] for r in rows]
        out += ["", gate, format_table([knob, "FFN FLOPs", "test acc", "drop (pp)"], body)]
    best = [
        [g, "-", "-", "-"] if b is None else [g, b["flops_fraction"], b["accuracy"], b["drop_pp"]]
        for g, b in result["best_within_1pp"].items()
    ]
    out += ["", "lowest FFN FLOPs within 1 pp of dense"]
    out += [format_table(["gate", "FFN FLOPs", "test acc", "drop (pp)"], best)]
    equal = [
        [e["flops_fraction"], *(_acc(e[g]) for g in ("dynamic_k", "top_k"))]
        for e in result["equal_flops"]
    ]
    out += ["", "test accuracy at equal FFN FLOPs (interpolated)"]
    out += [format_table(["FFN FLOPs", "dynamic_k", "top_k"], equal)]
    return "\n".join(out)


def _acc(value: float | None) -> object:
    return "-" if value is None else value


def run_small_moe(
    out: str | Path | None = None,
    *,
    samples: int = 5000,
    expert_size: int = 8,
    taus: Sequence[float] = DEFAULT_TAUS,
    router_epochs: int = 10,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], Any] = print,
    epochs: int = 30,
    hidden: int = 512,
) -> dict[str, Any]:
    """Train a small residual-MLP classifier on MNIST-1D, convert its FFNs to dynamic-k MoEs,
    train the routers on training inputs, and sweep dynamic-k τ and top-k k on the test split.

    Prints tables with `echo`, writes the result as JSON to `out` if given, and returns it.
    """
    splits = load_mnist1d(samples, seed=seed)
    torch.manual_seed(seed)
    model = ResidualMLPClassifier(hidden=hidden)
    dense = train_classifier(model, splits, epochs, 3e-3, 128, seed=seed, progress=progress)
    convert_(model, MoEConfig(expert_size=expert_size, seed=seed))
    start = time.perf_counter()
    inputs = [x for x, _ in batches(splits.train, 256)]
    losses = train_routers(model, inputs, epochs=router_epochs, progress=progress)
    router_seconds = time.perf_counter() - start
    experts = next(iter(moe_layers(model).values())).num_experts
    ks = sorted({max(1, round(s * experts)) for s in TOP_K_SHARES})
    result: dict[str, Any] = {
        "model": f"embed 40->128, {len(model.blocks)} x ReLU MLP 128->{hidden}->128",
        "samples": samples,
        "expert_size": expert_size,
        "experts": experts,
        "dense": dense,
        "router_losses": losses,
        "router_seconds": router_seconds,
        "curves": _sweep(model, splits.test, taus, ks, dense["test_acc"], progress),
    }
    _summarise(result)
    echo(_tables(result))
    if out is not None:
        write_json(out, result)
    return result
