"""Critical sparsity: magnitude sparsification of each FFN component, and the search."""

import pytest
import torch
from torch import nn

from ponder._sparsity.critical import CriticalReport, _topk_mask, critical_sparsity


class Gated(nn.Module):
    """A SwiGLU FFN: down(silu(gate(x)) * up(x))."""

    def __init__(self, d=12, h=32):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False)
        self.down_proj, self.act_fn = nn.Linear(h, d, bias=False), nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def mlp(d=12, h=32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d), nn.Linear(d, 3)).eval()


def cosine_quality(x):
    """Quality = mean cosine of the output to the model's own dense output (1.0 at baseline)."""
    reference = {}

    def quality(model):
        out = model(x)
        reference.setdefault("dense", out)
        return float(nn.functional.cosine_similarity(out, reference["dense"], dim=-1).mean())

    return quality


def test_topk_keeps_the_largest_magnitudes_per_token():
    x = torch.tensor([[3.0, -4.0, 1.0, 0.5], [0.1, 0.2, -0.3, 0.4]])
    torch.testing.assert_close(
        _topk_mask(x, 0.5), torch.tensor([[3.0, -4.0, 0, 0], [0, 0, -0.3, 0.4]])
    )
    assert torch.equal(_topk_mask(x, 0.0), x)
    assert (_topk_mask(x, 0.99) != 0).sum(-1).tolist() == [1, 1]  # at least one entry stays


def test_critical_is_the_last_level_before_quality_drops_below_keep():
    report = CriticalReport(baseline=1.0, keep=0.99, mode="topk", levels=(0.0, 0.5, 0.8, 0.9))
    report.quality["input"] = [1.0, 0.995, 0.98, 0.999]  # recovers at 0.9, but 0.8 failed
    assert report.critical("input") == 0.5
    assert report.to_dict()["critical"] == {"input": 0.5}


def test_sparsity_hits_the_intermediate_tensor_per_token():
    model = mlp()
    x = torch.randn(5, 12)
    seen = []
    # a forward hook sees the input as the pre-hooks (ours) left it
    model[2].register_forward_hook(lambda m, a, out: seen.append((a[0] != 0).sum(-1)))
    critical_sparsity(
        model, cosine_quality(x), components=["intermediate"], levels=(0.0, 0.75), progress=False
    )
    # calls: baseline, level 0, level 0.75 -> 8 of 32 hidden units kept for every token
    assert seen[-1].tolist() == [8] * 5 and seen[1].tolist() == [32] * 5


def test_quality_falls_as_sparsity_grows_and_components_match_the_form():
    x = torch.randn(64, 12)
    report = critical_sparsity(mlp(), cosine_quality(x), levels=(0.0, 0.5, 0.95), progress=False)
    assert set(report.quality) == {"input", "gate", "intermediate"}  # no `up` outside gated FFNs
    for qualities in report.quality.values():
        assert qualities[0] == pytest.approx(1.0) and qualities[2] < qualities[0]
    gated = critical_sparsity(Gated().eval(), cosine_quality(x), levels=(0.0, 0.9), progress=False)
    assert set(gated.quality) == {"input", "gate", "up", "intermediate"}


def test_threshold_mode_zeroes_about_the_requested_share():
    model = mlp()
    x = torch.randn(400, 12)
    zero_share = []
    model[2].register_forward_hook(
        lambda m, a, out: zero_share.append(float((a[0] == 0).float().mean()))
    )
    critical_sparsity(
        model,
        cosine_quality(x),
        components=["intermediate"],
        levels=(0.5,),
        mode="threshold",
        progress=False,
    )
    # calls: baseline, calibration pass, level 0.5 — the cut was fitted on the same data
    assert zero_share[-1] == pytest.approx(0.5, abs=0.02)


def test_errors():
    from ponder import ConfigError

    with pytest.raises(ConfigError, match="mode='random'"):
        critical_sparsity(mlp(), cosine_quality(torch.randn(2, 12)), mode="random")
    with pytest.raises(ConfigError, match="has no FFN"):
        critical_sparsity(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)), lambda m: 1.0)


@pytest.mark.slow
def test_ponder_sparsity_on_minilm(tmp_path):
    import json

    from click.testing import CliRunner

    from ponder._cli import main

    result = CliRunner().invoke(
        main, ["sparsity", "minilm", "--texts", "12", "--quiet", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "sparsity.json").read_text())
    assert set(data["critical"]) == {"input", "gate", "intermediate"}  # BERT FFNs are not gated
    assert data["baseline"] == pytest.approx(1.0, abs=1e-5)  # cosine of the dense model to itself
    for qualities in data["quality"].values():
        assert qualities[0] == pytest.approx(1.0, abs=1e-5) and qualities[-1] < 0.99
    assert (tmp_path / "sparsity.png").stat().st_size > 10_000
