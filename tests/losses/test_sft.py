"""SFT: the chosen completion's NLL, a token mean per pair, with no reference."""

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.sft import SFT


def test_golden_and_gradient():
    """Pair 0: chosen tokens [−1, −2] (third is padding) → mean −1.5 → L = 1.5; pair 1: [−0.5, −0.5, −2] → −1 → 1.
    dL/d token = −1/n⁺: [−½, −½, 0] and [−⅓, −⅓, −⅓]; the rejected completion gets no gradient.
    """
    chosen = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -2.0]], requires_grad=True)
    rejected = torch.tensor([[-3.0, 0.0, 0.0], [-1.0, -1.0, 0.0]], requires_grad=True)
    chosen_mask = torch.tensor([[True, True, False], [True, True, True]])
    rejected_mask = torch.tensor([[True, False, False], [True, True, False]])
    loss = build("sft")
    policy = LogProbs.from_tokens(chosen, rejected, chosen_mask, rejected_mask, length_normalized=True)
    output = loss(policy, None)
    assert_close(output.losses, torch.tensor([1.5, 1.0]))
    assert_close(output.chosen_rewards, torch.tensor([-1.5, -1.0]))
    assert_close(output.rejected_rewards, torch.tensor([-3.0, -1.0]))
    output.losses.sum().backward()
    assert_close(chosen.grad, torch.tensor([[-0.5, -0.5, 0.0], [-1 / 3, -1 / 3, -1 / 3]]))
    assert rejected.grad is None or not rejected.grad.any()


def test_needs_no_reference_and_takes_token_means():
    loss = SFT()
    assert loss.requires_reference is False and loss.length_normalized is True


def test_large_values_are_finite():
    """A token-mean log-prob of −1e4 gives L = 1e4."""
    output = SFT()(LogProbs.from_sums(torch.tensor([-1e4]), torch.tensor([0.0])), None)
    assert output.losses.item() == pytest.approx(1e4)
