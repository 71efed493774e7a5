"""NCA (pair): values derived by hand and the paper's gradient property."""

import math

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.nca import NCAPair


def ratios(chosen, rejected):
    """Records with ρc = chosen and ρr = rejected (the reference is 0)."""
    chosen, rejected = torch.as_tensor(chosen), torch.as_tensor(rejected)
    return LogProbs.from_sums(chosen, rejected), LogProbs.from_sums(torch.zeros_like(chosen), torch.zeros_like(chosen))


def test_golden():
    """β = 1, L = −logσ(ρc) − ½logσ(−ρc) − ½logσ(−ρr):

    (0, 0):     log 2 + ½ log 2 + ½ log 2 = 2 log 2 = 1.386294
    (log 2, 0): σ(log 2) = 2/3, σ(−log 2) = 1/3 → log 1.5 + ½ log 3 + ½ log 2
                = 0.405465 + 0.549306 + 0.346574 = 1.301345
    (1, −1):    0.313262 + ½·1.313262 + ½·0.313262 = 0.313262 + 0.656631 + 0.156631 = 1.126523
    """
    output = build("nca_pair", beta=1.0)(*ratios([0.0, math.log(2), 1.0], [0.0, 0.0, -1.0]))
    assert_close(output.losses, torch.tensor([1.386294, 1.301345, 1.126523]), atol=1e-6, rtol=0)
    assert_close(output.rejected_rewards, torch.tensor([0.0, 0.0, -1.0]))


def test_gradients_are_absolute_not_relative():
    """dL/dρc = β(½σ(βρc) − σ(−βρc)), whatever ρr: −0.25 at ρc = 0 (chosen raised), 0 at βρc = log 2;
    dL/dρr = ½β·σ(βρr) > 0 (rejected lowered): 0.25 at ρr = 0, ½·σ(−1) = 0.134471 at ρr = −1.
    """
    chosen = torch.tensor([0.0, 0.0, math.log(2)], requires_grad=True)
    rejected = torch.tensor([0.0, -1.0, 5.0], requires_grad=True)
    NCAPair(beta=1.0)(*ratios(chosen, rejected)).losses.sum().backward()
    assert_close(chosen.grad, torch.tensor([-0.25, -0.25, 0.0]), atol=1e-6, rtol=0)  # same ρc, other ρr: same
    assert_close(rejected.grad[:2], torch.tensor([0.25, 0.134471]), atol=1e-6, rtol=0)
    assert (rejected.grad > 0).all()


def test_large_values_are_finite():
    """β = 1, (ρc, ρr) = (1e4, −1e4): L = 0 + ½·1e4 + 0 = 5000; (−1e4, 1e4): 1e4 + 0 + ½·1e4 = 15000."""
    losses = NCAPair(beta=1.0)(*ratios([1e4, -1e4], [-1e4, 1e4])).losses
    assert_close(losses, torch.tensor([5000.0, 15000.0]))


def test_arguments():
    with pytest.raises(ValueError, match="beta"):
        NCAPair(beta=0.0)
