"""CPO: reference-free DPO on summed log-probs plus the chosen token-mean NLL, derived by hand."""

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.cpo import CPO

# sums pc = [−10, −20], pr = [−20, −10]; chosen lengths [5, 4]
POLICY = LogProbs.from_sums(torch.tensor([-10.0, -20.0]), torch.tensor([-20.0, -10.0]), torch.tensor([5, 4]))


def test_golden():
    """β = 0.1, α = 1: preference softplus(−0.1·(pc − pr)) = [softplus(−1), softplus(1)] = [0.313262, 1.313262];
    NLL = −pc/n⁺ = [10/5, 20/4] = [2, 5]; L = [2.313262, 6.313262]. Rewards β·pc = [−1, −2], β·pr = [−2, −1].
    """
    output = build("cpo")(POLICY, None)
    assert_close(output.losses, torch.tensor([2.313262, 6.313262]), atol=1e-6, rtol=0)
    assert_close(output.metrics["cpo/nll_loss"], torch.tensor([2.0, 5.0]))
    assert_close(output.chosen_rewards, torch.tensor([-1.0, -2.0]))


def test_alpha_zero_is_reference_free_dpo():
    assert_close(CPO(alpha=0.0)(POLICY, None).losses, torch.tensor([0.313262, 1.313262]), atol=1e-6, rtol=0)


def test_large_margins_are_finite():
    """pc − pr = ±1e5, β = 0.1, one token each: softplus(∓1e4) + NLL = [0 + 0, 1e4 + 1e5]."""
    policy = LogProbs.from_sums(torch.tensor([0.0, -1e5]), torch.tensor([-1e5, 0.0]))
    assert_close(CPO()(policy, None).losses, torch.tensor([0.0, 1.1e5]))


def test_arguments():
    assert CPO().requires_reference is False and CPO().length_normalized is False
    with pytest.raises(ValueError, match="alpha"):
        CPO(alpha=-1.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        CPO(label_smoothing=0.9)
