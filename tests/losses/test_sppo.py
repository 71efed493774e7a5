"""SPPO (hard): values and gradients derived by hand."""

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.sppo import SPPOHard


def ratios(chosen, rejected):
    """Records with ρc = chosen and ρr = rejected (the reference is 0)."""
    chosen, rejected = torch.as_tensor(chosen), torch.as_tensor(rejected)
    zeros = torch.zeros_like(chosen)
    return LogProbs.from_sums(chosen, rejected), LogProbs.from_sums(zeros, zeros)


def test_golden():
    """β = 0.5, so the targets are ±1/(2β) = ±1:
    (ρc, ρr) = (1, −1): 0² + 0² = 0;  (0, 0): (−1)² + 1² = 2;  (2, 1): 1² + 2² = 5.
    """
    output = build("sppo_hard", beta=0.5)(*ratios([1.0, 0.0, 2.0], [-1.0, 0.0, 1.0]))
    assert_close(output.losses, torch.tensor([0.0, 2.0, 5.0]))
    assert_close(output.chosen_rewards, torch.tensor([0.5, 0.0, 1.0]))


def test_gradients_target_each_ratio():
    """dL/dρc = 2(ρc − 1) and dL/dρr = 2(ρr + 1): at (0, 0) → (−2, 2), at (2, 1) → (2, 4)."""
    chosen = torch.tensor([0.0, 2.0], requires_grad=True)
    rejected = torch.tensor([0.0, 1.0], requires_grad=True)
    SPPOHard(beta=0.5)(*ratios(chosen, rejected)).losses.sum().backward()
    assert_close(chosen.grad, torch.tensor([-2.0, 2.0]))
    assert_close(rejected.grad, torch.tensor([2.0, 4.0]))


def test_large_values_are_finite():
    """β = 0.5, ρc = 1e4, ρr = −1e4: (1e4 − 1)² + (−1e4 + 1)² = 2·9999² = 199960002."""
    losses = SPPOHard(beta=0.5)(*ratios([1e4], [-1e4])).losses
    assert_close(losses, torch.tensor([199960002.0]))


def test_arguments():
    with pytest.raises(ValueError, match="beta"):
        SPPOHard(beta=0)
