"""DiscoPOP: values derived by hand, and no overflow where the direct form gives inf·0."""

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.discopop import DiscoPOP


def margins(h):
    """Records with ρc = h and ρr = 0."""
    h = torch.as_tensor(h)
    zeros = torch.zeros_like(h)
    return LogProbs.from_sums(h, zeros), LogProbs.from_sums(zeros, zeros)


def test_golden():
    """β = 1, τ = 0.05, z = h, m = σ(z/τ) = σ(20z); L = (1 − m)·softplus(−z) + m·e^(−z):

    z = 0:    m = 0.5: 0.5·0.693147 + 0.5·1 = 0.846574
    z = 0.1:  m = σ(2) = 0.880797: 0.119203·0.644397 + 0.880797·0.904837 = 0.076814 + 0.796977 = 0.873792
    z = −0.1: m = σ(−2) = 0.119203: 0.880797·0.744397 + 0.119203·1.105171 = 0.655663 + 0.131740 = 0.787403
    """
    output = build("discopop", beta=1.0)(*margins([0.0, 0.1, -0.1]))
    assert_close(output.losses, torch.tensor([0.846574, 0.873792, 0.787403]), atol=2e-6, rtol=0)


def test_large_margins_are_finite():
    """β = 1, z = ±1e4: the direct form has e^(1e4)·σ(−2e5) = inf·0 = NaN at z = −1e4; the limits are
    L → 0 (z = 1e4) and L → softplus(1e4) = 1e4 (z = −1e4). Gradients stay finite: 0 and −1.
    """
    h = torch.tensor([1e4, -1e4], requires_grad=True)
    losses = DiscoPOP(beta=1.0)(*margins(h)).losses
    assert_close(losses, torch.tensor([0.0, 1e4]))
    losses.sum().backward()
    assert_close(h.grad, torch.tensor([0.0, -1.0]))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.05])
def test_tau_outside_bounds_is_an_error(bad):
    with pytest.raises(ValueError, match=r"tau.*\(0, 1\)"):
        DiscoPOP(tau=bad)
