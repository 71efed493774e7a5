"""f-DPO (forward KL, Jensen–Shannon, α-divergence): values derived by hand, limits and overflow safety."""

import math

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.fdpo import AlphaDivergenceDPO, ForwardKLDPO, JensenShannonDPO, saturating_exp_difference

LOG2 = math.log(2)


def ratios(chosen, rejected):
    """Records with ρc = chosen and ρr = rejected (the reference is 0)."""
    chosen, rejected = torch.as_tensor(chosen), torch.as_tensor(rejected)
    zeros = torch.zeros_like(chosen)
    return LogProbs.from_sums(chosen, rejected), LogProbs.from_sums(zeros, zeros)


def test_forward_kl_golden():
    """β = 1, g = e^(−ρr) − e^(−ρc):
    (0, 0): g = 0 → log 2 = 0.693147;  (log 2, 0): g = 1 − ½ = ½ → softplus(−½) = 0.474077;
    (0, log 2): g = ½ − 1 = −½ → softplus(½) = 0.974077.
    """
    output = build("fdpo_forward_kl", beta=1.0)(*ratios([0.0, LOG2, 0.0], [0.0, 0.0, LOG2]))
    assert_close(output.losses, torch.tensor([0.693147, 0.474077, 0.974077]), atol=1e-6, rtol=0)
    assert_close(output.chosen_rewards, torch.tensor([0.0, LOG2, 0.0]))


def test_alpha_golden_and_limits():
    """α = ½, β = 1, g = (e^(−ρr/2) − e^(−ρc/2))/½: (2 log 2, 0): (1 − ½)·2 = 1 → softplus(−1) = 0.313262;
    (0, 2 log 2): −1 → softplus(1) = 1.313262. α = 1 is the forward KL; α → 0 is DPO (g → h).
    """
    records = ratios([2 * LOG2, 0.0], [0.0, 2 * LOG2])
    losses = build("fdpo_alpha", beta=1.0, alpha=0.5)(*records).losses
    assert_close(losses, torch.tensor([0.313262, 1.313262]), atol=1e-6, rtol=0)
    assert_close(AlphaDivergenceDPO(alpha=1.0)(*records).losses, ForwardKLDPO()(*records).losses)
    assert_close(AlphaDivergenceDPO(alpha=1e-4)(*records).losses, build("dpo")(*records).losses, atol=1e-4, rtol=0)


def test_js_golden():
    """β = 1, g = logσ(ρc) − logσ(ρr): (0, 0) → log 2; (log 3, −log 3): σ = ¾ and ¼, g = log 3, L = log(4/3) = 0.287682.
    With ε = 0.1 the second is 0.9·log(4/3) + 0.1·log 4 = 0.258914 + 0.138629 = 0.397543.
    """
    records = ratios([0.0, math.log(3)], [0.0, -math.log(3)])
    assert_close(build("fdpo_js", beta=1.0)(*records).losses, torch.tensor([LOG2, math.log(4 / 3)]))
    smoothed = JensenShannonDPO(beta=1.0, label_smoothing=0.1)(*records).losses
    assert smoothed[1].item() == pytest.approx(0.397543, abs=1e-6)


@pytest.mark.parametrize("loss", [ForwardKLDPO(beta=1.0), JensenShannonDPO(beta=1.0), AlphaDivergenceDPO(beta=1.0)])
def test_equal_log_probs(loss):
    """ρc = ρr: g = 0 for every divergence, L = log 2; dL/dρc = −½β·f''(u)·u is finite and negative."""
    chosen = torch.tensor([0.0, -3.0], requires_grad=True)
    output = loss(*ratios(chosen, torch.tensor([0.0, -3.0])))
    assert_close(output.losses, torch.full((2,), LOG2))
    output.losses.sum().backward()
    assert torch.isfinite(chosen.grad).all() and (chosen.grad < 0).all()


def test_large_margins_never_overflow():
    """Forward KL, β = 0.1:
    (1e4, −1e4): g = e^(1e4) − e^(−1e4) saturates at +e^50 → L = 0 (the limit);
    (−1e4, 1e4): g saturates at −e^50 → L = 0.1·e^50 = 5.18e20 (finite; the exact loss overflows float32);
    (−60, −100): g = e^100 − e^60 > 0, exactly representable only as "huge": L = 0 (clamping each exponent at
    50 separately would give g = 0 and L = log 2). JS: (1e4, −1e4) → g = 1e4, L = 0; reversed L = 0.1·1e4 = 1000.
    """
    chosen = torch.tensor([1e4, -1e4, -60.0], requires_grad=True)
    rejected = torch.tensor([-1e4, 1e4, -100.0], requires_grad=True)
    losses = ForwardKLDPO(beta=0.1)(*ratios(chosen, rejected)).losses
    assert_close(losses, torch.tensor([0.0, 0.1 * math.exp(50), 0.0]))
    losses.sum().backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert torch.isfinite(losses.mean())
    js = JensenShannonDPO(beta=0.1)(*ratios([1e4, -1e4], [-1e4, 1e4])).losses
    assert_close(js, torch.tensor([0.0, 1000.0]))


def test_saturating_exp_difference_is_exact_in_range():
    """e^a − e^b for a few (a, b): e^1 − 1 = 1.718282, e^−20 − e^−20 = 0, e^10 − e^9.999 (a small difference)."""
    a = torch.tensor([1.0, -20.0, 10.0], dtype=torch.float64)
    b = torch.tensor([0.0, -20.0, 9.999], dtype=torch.float64)
    assert_close(saturating_exp_difference(a, b), torch.exp(a) - torch.exp(b))


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_alpha_outside_bounds_is_an_error(bad):
    with pytest.raises(ValueError, match=r"alpha.*\(0, 1\]"):
        AlphaDivergenceDPO(alpha=bad)


def test_label_smoothing_bounds():
    with pytest.raises(ValueError, match="label_smoothing"):
        ForwardKLDPO(label_smoothing=0.6)
