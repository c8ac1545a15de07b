"""Tests of the D2DMoE expert split: balanced k-means and the stacked expert weights."""

from __future__ import annotations

import pytest
import torch

from ponder._core.errors import ConfigError
from ponder._moe.split import (
    balanced_kmeans,
    dense_ffn,
    dense_from_experts,
    expert_outputs,
    kmeans_objective,
    split_ffn,
)
from ponder.kernels import get_activation

# float32 defaults (rtol 1.3e-6) are too tight for a sum over up to 24 experts in another
# order than the dense matmul's; 1e-5 on outputs of size ~1 is still far below any real error.
TOL = {"rtol": 1e-5, "atol": 1e-5}


def clustered(directions: int, per: int, dim: int = 16, noise: float = 0.1, seed: int = 0):
    """Rows around `directions` orthonormal directions (+ noise), shuffled: (points, truth)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.linalg.qr(torch.randn(dim, directions, generator=gen))[0].T  # [K, D]
    truth = torch.arange(directions).repeat_interleave(per)
    points = centres[truth] + noise * torch.randn(len(truth), dim, generator=gen)
    perm = torch.randperm(len(truth), generator=gen)
    return points[perm], truth[perm]


def partition(labels: torch.Tensor) -> set[frozenset[int]]:
    """The split as a set of clusters, so two labellings compare up to relabelling."""
    return {frozenset((labels == k).nonzero().flatten().tolist()) for k in labels.unique()}


def random_ffn(d: int = 13, h: int = 24, *, bias: bool = True, gated: bool = False):
    gen = torch.Generator().manual_seed(1)
    w1 = torch.randn(h, d, generator=gen) / d**0.5
    b1 = torch.randn(h, generator=gen) if bias else None
    w2 = torch.randn(d, h, generator=gen) / h**0.5
    w_up = torch.randn(h, d, generator=gen) / d**0.5 if gated else None
    x = torch.randn(7, d, generator=gen)
    return x, w1, b1, w2, w_up


@pytest.mark.parametrize(("n", "k"), [(24, 4), (60, 6), (96, 24), (10, 1), (8, 8), (63, 7)])
def test_balanced_sizes_exactly_equal(n, k):
    labels = balanced_kmeans(torch.randn(n, 5), k)
    assert labels.dtype == torch.long and labels.shape == (n,)
    assert torch.equal(torch.bincount(labels, minlength=k), torch.full((k,), n // k))


def test_deterministic_per_seed():
    points = torch.randn(120, 9)
    a = balanced_kmeans(points, 8, seed=3)
    assert torch.equal(a, balanced_kmeans(points, 8, seed=3))
    other = balanced_kmeans(points, 8, seed=4)  # another seed: still a valid balanced split
    assert torch.equal(torch.bincount(other), torch.full((8,), 15))


def test_recovers_cluster_structure_and_beats_random_split():
    points, truth = clustered(directions=6, per=20)
    labels = balanced_kmeans(points, 6)
    pairs = set(zip(labels.tolist(), truth.tolist(), strict=True))
    assert len(pairs) == 6  # a bijection between found and true clusters
    random = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)) % 6
    assert kmeans_objective(points, labels) > kmeans_objective(points, random) + 0.3


def test_restarts_keep_the_best_run():
    points, _ = clustered(directions=8, per=4, noise=0.6)
    one = kmeans_objective(points, balanced_kmeans(points, 8, seed=5))
    best = kmeans_objective(points, balanced_kmeans(points, 8, seed=5, restarts=4))
    assert best >= one  # the first of the four runs is the single run


def test_scale_of_rows_is_ignored():
    points, _ = clustered(directions=4, per=10)
    scale = torch.rand(len(points), 1, generator=torch.Generator().manual_seed(0)) * 10 + 0.1
    assert partition(balanced_kmeans(points, 4)) == partition(balanced_kmeans(points * scale, 4))


def test_indivisible_cluster_count_raises():
    with pytest.raises(ConfigError, match="sizes that do: 1, 2, 5, 10"):
        balanced_kmeans(torch.randn(10, 3), 3)
    with pytest.raises(ConfigError, match="restarts=0"):
        balanced_kmeans(torch.randn(10, 3), 2, restarts=0)


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "silu"])
@pytest.mark.parametrize("expert_size", [4, 6, 8, 24, 1])
@pytest.mark.parametrize("gated", [False, True])
def test_experts_sum_to_dense_ffn(activation, expert_size, gated):
    x, w1, b1, w2, w_up = random_ffn(gated=gated)
    ew = split_ffn(w1, b1, w2, expert_size=expert_size, w_up=w_up)
    e, d = 24 // expert_size, 13
    assert ew.w1.shape == (e, d, expert_size) and ew.w2.shape == (e, expert_size, d)
    assert ew.b1.shape == (e, expert_size) and ew.neuron_index.shape == (e, expert_size)
    assert (ew.w_up is None) != gated and (not gated or ew.w_up.shape == ew.w1.shape)
    assert torch.equal(ew.neuron_index.flatten().sort().values, torch.arange(24))
    outs = expert_outputs(x, ew, activation)  # [T, E, D]
    assert outs.shape == (7, e, d)
    dense = w2 @ (get_activation(activation)(w1 @ x.T + b1[:, None]) * (w_up @ x.T if gated else 1))
    torch.testing.assert_close(outs.sum(1), dense.T, **TOL)
    torch.testing.assert_close(dense_ffn(x, w1, b1, w2, activation, w_up), dense.T, **TOL)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_dense_from_experts_inverts_bitwise(gated, bias):
    _, w1, b1, w2, w_up = random_ffn(bias=bias, gated=gated)
    back = dense_from_experts(split_ffn(w1, b1, w2, expert_size=6, w_up=w_up))
    for got, want in zip(back, (w1, b1, w2, w_up), strict=True):
        assert (got is None and want is None) or torch.equal(got, want)


def test_expert_slots_follow_neuron_index():
    _, w1, b1, w2, _ = random_ffn()
    ew = split_ffn(w1, b1, w2, expert_size=8)
    i, j = 2, 5
    n = int(ew.neuron_index[i, j])
    assert torch.equal(ew.w1[i, :, j], w1[n]) and torch.equal(ew.w2[i, j], w2[:, n])
    assert ew.b1[i, j] == b1[n] and (ew.num_experts, ew.expert_size) == (3, 8)


def test_split_groups_similar_neurons():
    points, truth = clustered(directions=4, per=6, dim=13)
    ew = split_ffn(points, None, torch.randn(13, 24), expert_size=6)
    groups = {tuple(sorted(set(truth[row].tolist()))) for row in ew.neuron_index}
    assert groups == {(0,), (1,), (2,), (3,)}


def test_bad_expert_size_raises():
    _, w1, b1, w2, _ = random_ffn()
    with pytest.raises(ConfigError, match="sizes that do: 1, 2, 3, 4, 6, 8, 12, 24"):
        split_ffn(w1, b1, w2, expert_size=5)
    with pytest.raises(ConfigError, match="expert_size=0"):
        split_ffn(w1, b1, w2, expert_size=0)


def test_mismatched_shapes_raise():
    _, w1, b1, w2, _ = random_ffn()
    with pytest.raises(ConfigError, match="FFN shapes do not match"):
        split_ffn(w1, b1, w2.T, expert_size=4)
    with pytest.raises(ConfigError, match="must have w1's shape"):
        split_ffn(w1, b1, w2, expert_size=4, w_up=w1[:, :5])


def test_unknown_activation_raises():
    _, w1, b1, w2, _ = random_ffn()
    with pytest.raises(ConfigError, match="known: gelu, gelu_tanh, relu, silu"):
        expert_outputs(torch.randn(2, 13), split_ffn(w1, b1, w2, expert_size=4), "tanh")
