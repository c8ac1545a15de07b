"""D2DMoE step 2, the expert split: balanced k-means on the FFN's first-layer rows, and the
stacked expert weights it yields (which reproduce the dense FFN exactly when all experts run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ponder._core.errors import ConfigError
from ponder.kernels import get_activation  # the one activation registry

__all__ = [
    "ExpertWeights",
    "balanced_kmeans",
    "dense_ffn",
    "dense_from_experts",
    "expert_outputs",
    "kmeans_objective",
    "split_ffn",
]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ---------------------------------------------------------------- balanced k-means
# N=points, K=clusters, c=N/K points per cluster, D=width.
#
# Each Lloyd iteration assigns under the equal-size constraint in two vectorised steps:
# 1. greedy proposals: every unassigned point proposes to its most similar centroid that still
#    has room; each centroid accepts its most similar proposers up to its room. At most K
#    rounds (each fills a centroid or places every proposer), O(N·K) per round, O(N·K²) at worst.
# 2. pairwise exchange: for a pair of clusters (a, b) the best split of their 2c points is exact
#    and cheap (the c points with the largest sim_a − sim_b go to a). A round-robin schedule
#    runs K/2 disjoint pairs at once, K−1 rounds per pass, O(N·K·log c) per pass, until a pass
#    gains nothing. Neither step lowers the total similarity to the assigned centroids.
# An exact assignment (scipy linear_sum_assignment on an N×N cost with each centroid repeated
# c times) took 0.12 s for N=1536, K=24 and 0.57 s for N=3072, K=48 per iteration on this
# 2-core CPU box, too slow for 50 iterations. On the first iteration's similarities (k-means++
# centroids, clustered Gaussian rows) greedy alone reached 97.3% / 98.2% of that exact optimum
# and greedy + exchange 99.8% / 99.8% (N=1536/K=24, N=3072/K=48), the exchange in 16 / 70 ms.


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding on unit rows (squared distance = 2 − 2·cos): [K, D].

    As scikit-learn does, each step samples 2 + ⌊ln K⌋ candidates and keeps the one that
    lowers the potential most. Plain k-means++ left two seeds in one true cluster in 3 of 300
    runs on clustered data (6×20 and 4×6 rows around random directions), greedy in 1 of 300;
    balanced Lloyd steps cannot undo that.
    """
    n, trials = x.shape[0], 2 + int(math.log(k))
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    dist = (2 - 2 * x @ x[chosen[0]]).clamp_min(0)  # [N]
    for _ in range(1, k):
        weights = dist if float(dist.sum()) > 0 else torch.ones_like(dist)
        cand = torch.multinomial(weights, trials, replacement=True, generator=gen)  # [C]
        cand_dist = torch.minimum(dist, (2 - 2 * x[cand] @ x.T).clamp_min(0))  # [C, N]
        best = int(cand_dist.sum(1).argmin())
        chosen.append(int(cand[best]))
        dist = cand_dist[best]
    return x[chosen]


def _greedy_assign(sim: torch.Tensor, size: int) -> torch.Tensor:
    """Capacity-constrained greedy assignment of rows of `sim` [N, K]: labels [N]."""
    n, k = sim.shape
    labels = torch.full((n,), -1, dtype=torch.long)
    room = torch.full((k,), size, dtype=torch.long)
    while bool((labels < 0).any()):
        idx = (labels < 0).nonzero().squeeze(1)  # [F] unassigned points
        s = sim[idx].masked_fill(room == 0, float("-inf"))  # [F, K]
        best_sim, best = s.max(1)  # [F]
        order = torch.argsort(best_sim, descending=True, stable=True)
        order = order[torch.argsort(best[order], stable=True)]  # grouped by centroid, best first
        target = best[order]  # [F]
        counts = torch.bincount(target, minlength=k)
        rank = torch.arange(len(order)) - (counts.cumsum(0) - counts)[target]
        take = rank < room[target]
        labels[idx[order[take]]] = target[take]
        room -= torch.bincount(target[take], minlength=k)
    return labels


def _round_robin(k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Circle-method schedule: K−1 (or K) rounds of disjoint pairs covering every pair once."""
    players = list(range(k)) + ([-1] if k % 2 else [])
    n = len(players)
    rounds = []
    for _ in range(n - 1):
        pairs = [(players[i], players[n - 1 - i]) for i in range(n // 2)]
        pairs = [p for p in pairs if -1 not in p]
        rounds.append((torch.tensor([a for a, _ in pairs]), torch.tensor([b for _, b in pairs])))
        players = [players[0], players[-1], *players[1:-1]]
    return rounds


def _exchange(sim: torch.Tensor, members: torch.Tensor, max_passes: int = 20) -> torch.Tensor:
    """Improve a balanced split, members [K, c], by exact pairwise re-splits: members [K, c]."""
    k, c = members.shape
    rows = torch.arange(k)[:, None]
    total = float(sim[members, rows].sum())
    for _ in range(max_passes):
        for a, b in _round_robin(k):
            union = torch.cat([members[a], members[b]], 1)  # [P, 2c] P=pairs this round
            gain = sim[union, a[:, None]] - sim[union, b[:, None]]  # [P, 2c]
            order = torch.argsort(gain, dim=1, descending=True, stable=True)
            union = union.gather(1, order)  # [P, 2c], best for a first
            members[a], members[b] = union[:, :c], union[:, c:]
        new_total = float(sim[members, rows].sum())
        if new_total <= total + 1e-6 * max(1.0, abs(total)):
            break
        total = new_total
    return members


def _members(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Labels [N] of a balanced split -> member indices [K, c], ascending within a cluster."""
    return torch.argsort(labels, stable=True).view(k, -1)  # [K, c]


def _check_clusters(n: int, clusters: int) -> None:
    if clusters < 1 or n % clusters:
        raise ConfigError(
            f"cannot split {n} rows into {clusters} equal clusters: the cluster (expert) size "
            f"must divide {n}; sizes that do: {', '.join(map(str, _divisors(n)))}"
        )


def _lloyd(x: torch.Tensor, clusters: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """One balanced spherical k-means run on unit rows x [N, D] from a k-means++ seeding."""
    n = x.shape[0]
    centroids = _kmeans_pp(x, clusters, gen)  # [K, D]
    labels = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        sim = x @ centroids.T  # [N, K]
        members = _exchange(sim, _members(_greedy_assign(sim, n // clusters), clusters))
        new = torch.empty_like(labels)
        new[members] = torch.arange(clusters)[:, None].expand_as(members)
        if torch.equal(new, labels):
            break
        labels = new
        centroids = F.normalize(x[members].mean(1), dim=1)  # [K, D]
    return labels


def balanced_kmeans(
    points: torch.Tensor, clusters: int, *, iters: int = 50, seed: int = 0, restarts: int = 1
) -> torch.Tensor:
    """Spherical k-means with equal cluster sizes on the L2-normalised rows of `points` [N, D].

    Returns labels [N] (long, values 0..clusters−1, each exactly N/clusters times); the same
    seed gives the same labels. Runs on the CPU. `restarts` runs, keeping the one with the best
    `kmeans_objective`, guard against a bad seeding. One run, measured on this 2-core CPU box with one thread:
    N=1536, K=24, D=384 in 0.07–0.10 s; N=3072, K=48, D=768 in 0.16–0.25 s (shared machine).
    """
    n = points.shape[0]
    _check_clusters(n, clusters)
    if restarts < 1:
        raise ConfigError(f"restarts={restarts} must be at least 1")
    if clusters == 1:
        return torch.zeros(n, dtype=torch.long)
    if clusters == n:
        return torch.arange(n)
    x = F.normalize(points.detach().float().cpu(), dim=1)  # [N, D]
    gen = torch.Generator().manual_seed(seed)
    runs = [_lloyd(x, clusters, iters, gen) for _ in range(restarts)]
    return max(runs, key=lambda labels: kmeans_objective(x, labels))


def kmeans_objective(points: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cosine of each normalised row to its cluster's normalised mean (higher is better)."""
    x = F.normalize(points.detach().float(), dim=1)  # [N, D]
    k = int(labels.max()) + 1
    sums = torch.zeros(k, x.shape[1]).index_add_(0, labels, x)  # [K, D]
    return float((x * F.normalize(sums, dim=1)[labels]).sum(1).mean())


# ---------------------------------------------------------------- expert weights
@dataclass(frozen=True, eq=False)
class ExpertWeights:
    """An FFN split into E experts of e hidden neurons each, in the kernel layout.

    w1 [E, D, e], b1 [E, e] | None, w2 [E, e, D], w_up [E, D, e] | None (gated FFNs), and
    neuron_index [E, e]: the dense hidden neuron at each expert slot.
    """

    w1: torch.Tensor
    b1: torch.Tensor | None
    w2: torch.Tensor
    w_up: torch.Tensor | None
    neuron_index: torch.Tensor

    @property
    def num_experts(self) -> int:
        return self.neuron_index.shape[0]

    @property
    def expert_size(self) -> int:
        return self.neuron_index.shape[1]


def _check_ffn(w1: torch.Tensor, b1, w2: torch.Tensor, w_up, expert_size: int) -> None:
    h, d = w1.shape
    if w2.shape != (d, h) or (b1 is not None and b1.shape != (h,)):
        bias = None if b1 is None else tuple(b1.shape)
        raise ConfigError(
            f"FFN shapes do not match: w1 {tuple(w1.shape)} needs w2 {(d, h)} and b1 {(h,)}, "
            f"got w2 {tuple(w2.shape)}, b1 {bias} (nn.Linear layout: weight is [out, in])"
        )
    if w_up is not None and w_up.shape != w1.shape:
        raise ConfigError(f"w_up {tuple(w_up.shape)} must have w1's shape {tuple(w1.shape)}")
    if expert_size < 1 or h % expert_size:
        raise ConfigError(
            f"expert_size={expert_size} does not divide the FFN's {h} hidden neurons; "
            f"sizes that do: {', '.join(map(str, _divisors(h)))}"
        )


def split_ffn(
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    *,
    expert_size: int,
    w_up: torch.Tensor | None = None,
    seed: int = 0,
) -> ExpertWeights:
    """Split a dense FFN (w1 [H, D], b1 [H], w2 [D, H]; w1 is the gate if `w_up` is given) into
    H/expert_size experts by balanced k-means on w1's normalised rows."""
    _check_ffn(w1, b1, w2, w_up, expert_size)
    h = w1.shape[0]
    labels = balanced_kmeans(w1, h // expert_size, seed=seed)
    index = _members(labels, h // expert_size).to(w1.device)  # [E, e] E=experts, e=expert size
    return ExpertWeights(
        w1=w1.detach()[index].transpose(1, 2).contiguous(),  # [E, D, e]
        b1=None if b1 is None else b1.detach()[index].clone(),  # [E, e]
        w2=w2.detach()[:, index].permute(1, 2, 0).contiguous(),  # [E, e, D]
        w_up=None if w_up is None else w_up.detach()[index].transpose(1, 2).contiguous(),
        neuron_index=index,
    )


def dense_from_experts(
    ew: ExpertWeights,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Undo `split_ffn`: (w1 [H, D], b1 [H] | None, w2 [D, H], w_up [H, D] | None), bitwise."""
    flat = ew.neuron_index.reshape(-1)  # [H], slot -> dense neuron

    def rows(t: torch.Tensor) -> torch.Tensor:  # [E, D, e] -> [H, D] in dense order
        out = torch.empty(flat.numel(), t.shape[1], dtype=t.dtype, device=t.device)
        out[flat] = t.transpose(1, 2).reshape(flat.numel(), -1)
        return out

    b1 = None
    if ew.b1 is not None:
        b1 = torch.empty_like(ew.b1.reshape(-1))
        b1[flat] = ew.b1.reshape(-1)
    w_up = None if ew.w_up is None else rows(ew.w_up)
    w2 = rows(ew.w2.transpose(1, 2)).T.contiguous()  # [E, e, D] -> [D, H]
    return rows(ew.w1), b1, w2, w_up


def dense_ffn(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    activation: str,
    w_up: torch.Tensor | None = None,
) -> torch.Tensor:
    """The dense FFN x [T, D] -> [T, D]: w2 · act(w1 x + b1), times (w_up x) inside if gated."""
    h = get_activation(activation)(F.linear(x, w1, b1))  # [T, H]
    if w_up is not None:
        h = h * F.linear(x, w_up)
    return F.linear(h, w2)


def expert_outputs(x: torch.Tensor, ew: ExpertWeights, activation: str) -> torch.Tensor:
    """Reference: every expert's output for x [T, D] -> [T, E, D]; the sum over E is the FFN."""
    # T=tokens, E=experts (x in the einsums), e=expert size, D=width
    h = torch.einsum("td,xde->txe", x, ew.w1)  # [T, E, e]
    if ew.b1 is not None:
        h = h + ew.b1
    h = get_activation(activation)(h)
    if ew.w_up is not None:
        h = h * torch.einsum("td,xde->txe", x, ew.w_up)  # [T, E, e]
    return torch.einsum("txe,xed->txd", h, ew.w2)  # [T, E, D]
