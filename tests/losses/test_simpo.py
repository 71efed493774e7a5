"""SimPO: values derived by hand on token means, no reference."""

import pytest
import torch
from torch.testing import assert_close

from lightpref.losses import LogProbs, build
from lightpref.losses.simpo import SimPO

# token means p̄c = [−1, −2, −1], p̄r = [−2, −1, −1]
POLICY = LogProbs.from_sums(torch.tensor([-1.0, -2.0, -1.0]), torch.tensor([-2.0, -1.0, -1.0]))


def test_golden():
    """β = 2, γ/β = 0.5 so γ = 1; z = 2·(p̄c − p̄r) − 1 = [1, −3, −1]:
    L = softplus(−z) = [0.313262, 3.048587, 1.313262]; rewards β·p̄ = [−2, −4, −2] and [−4, −2, −2].
    """
    output = build("simpo")(POLICY, None)
    assert_close(output.losses, torch.tensor([0.313262, 3.048587, 1.313262]), atol=1e-6, rtol=0)
    assert_close(output.chosen_rewards, torch.tensor([-2.0, -4.0, -2.0]))
    assert_close(output.rejected_rewards, torch.tensor([-4.0, -2.0, -2.0]))


def test_label_smoothing():
    """ε = 0.1, z = 1: 0.9·softplus(−1) + 0.1·softplus(1) = 0.281936 + 0.131326 = 0.413262."""
    loss = SimPO(beta=2.0, gamma_beta_ratio=0.5, label_smoothing=0.1)(POLICY, None).losses
    assert loss[0].item() == pytest.approx(0.413262, abs=1e-6)


def test_declares_token_means_and_no_reference():
    loss = SimPO()
    assert loss.length_normalized and not loss.requires_reference
    assert loss.beta == 2.0 and loss.gamma_beta_ratio == 0.5


def test_large_margins_are_finite():
    """β = 2, γ = 1: p̄c − p̄r = 1e4 → L = 0; −1e4 → softplus(2e4 + 1) = 20001."""
    policy = LogProbs.from_sums(torch.tensor([0.0, -1e4]), torch.tensor([-1e4, 0.0]))
    assert_close(SimPO()(policy, None).losses, torch.tensor([0.0, 20001.0]))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_gamma_beta_ratio_is_validated(bad):
    with pytest.raises(ValueError, match="gamma_beta_ratio"):
        SimPO(gamma_beta_ratio=bad)
