"""EXO (pair): values derived by hand, ε at its bounds, large margins."""

import math

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.exo import EXOPair


def margins(h):
    """Records with ρc = h and ρr = 0."""
    h = torch.as_tensor(h)
    zeros = torch.zeros_like(h)
    return LogProbs.from_sums(h, zeros), LogProbs.from_sums(zeros, zeros)


def test_golden():
    """β = 1, ε = 0.1; L = σ(z)(logσ(z) − log 0.9) + σ(−z)(logσ(−z) − log 0.1);
    log 0.9 = −0.105361, log 0.1 = −2.302585.

    z = 0: 0.5·(−0.693147 + 0.105361) + 0.5·(−0.693147 + 2.302585) = −0.293893 + 0.804719 = 0.510826
    z = 1: σ = 0.731059, 0.268941: 0.731059·(−0.313262 + 0.105361) + 0.268941·(−1.313262 + 2.302585)
           = −0.151988 + 0.266070 = 0.114082
    z = log 9 = 2.197225: σ(z) = 0.9 exactly, so p_θ equals the label and L = 0 (the minimum).
    """
    output = build("exo_pair", beta=1.0, label_smoothing=0.1)(*margins([0.0, 1.0, math.log(9)]))
    assert_close(output.losses, torch.tensor([0.510826, 0.114082, 0.0]), atol=1e-6, rtol=0)
    assert_close(output.chosen_rewards, torch.tensor([0.0, 1.0, math.log(9)]))


def test_pushes_back_beyond_the_label():
    """Mode-seeking: the gradient is zero at σ(z) = 1 − ε and positive in z beyond it (z = 4 > log 9)."""
    h = torch.tensor([math.log(9), 4.0], requires_grad=True)
    EXOPair(beta=1.0, label_smoothing=0.1)(*margins(h)).losses.sum().backward()
    assert abs(h.grad[0].item()) < 1e-6 and h.grad[1] > 0


def test_large_margins_are_finite():
    """Default ε = 1e-3, β = 0.1, h = ±1e5 so z = ±1e4:
    z = 1e4:  σ(z) = 1, σ(−z) = 0 → L = 0 − log(0.999) = 0.0010005;
    z = −1e4: σ(z) = 0, σ(−z) = 1 → L = 0 − log(1e-3) = 6.907755 (the limits, no 0·inf).
    """
    h = torch.tensor([1e5, -1e5], requires_grad=True)
    losses = EXOPair()(*margins(h)).losses
    assert_close(losses, torch.tensor([-math.log(0.999), -math.log(1e-3)]))
    losses.sum().backward()
    assert torch.isfinite(h.grad).all()


def test_zero_epsilon_is_an_error_naming_the_default():
    with pytest.raises(ValueError, match=r"label_smoothing.*1e-3"):
        EXOPair(label_smoothing=0.0)


@pytest.mark.parametrize("bad", [-0.1, 0.51])
def test_epsilon_outside_bounds_is_an_error(bad):
    with pytest.raises(ValueError, match="label_smoothing"):
        EXOPair(label_smoothing=bad)


def test_epsilon_at_one_half_is_kl_to_uniform():
    """ε = 0.5, z = 0: both distributions are uniform, L = 0."""
    assert EXOPair(beta=1.0, label_smoothing=0.5)(*margins([0.0])).losses.item() == pytest.approx(0.0, abs=1e-7)
