"""Reward losses: Bradley–Terry by hand (margin, centring as TRL adds it), the contract check, the registry."""

import math

import pytest
import torch

from lightpref.reward.losses import (
    PairScores,
    RewardLoss,
    RewardLossOutput,
    RewardLossRegistryError,
    build,
    check_reward_output,
    registered_losses,
)
from lightpref.reward.losses.bradley_terry import BradleyTerry


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_bradley_terry_by_hand():
    """r⁺ − r⁻ = (1.0, −0.5, 3.0); loss = −logσ of each."""
    scores = PairScores(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 0.5, -2.0]))
    losses = build("bradley_terry")(scores).losses
    expected = [-log_sigmoid(1.0), -log_sigmoid(-0.5), -log_sigmoid(3.0)]
    torch.testing.assert_close(losses, torch.tensor(expected))


def test_margin_is_subtracted_from_the_score_difference():
    """m = (0.5, 2.0): −logσ(1.0 − 0.5), −logσ(1.0 − 2.0)."""
    scores = PairScores(torch.tensor([2.0, 2.0]), torch.tensor([1.0, 1.0]), margin=torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(BradleyTerry()(scores).losses, torch.tensor([-log_sigmoid(0.5), -log_sigmoid(-1.0)]))


def test_centring_batch_mean_equals_trl_reward_trainer_formula():
    """TRL 1.16 RewardTrainer.compute_loss: −logσ(Δ).mean() + λ·mean((r⁺ + r⁻)²)."""
    chosen, rejected, coefficient = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 0.5, -2.0]), 0.01
    output = BradleyTerry(center_rewards_coefficient=coefficient)(PairScores(chosen, rejected))
    trl = -torch.nn.functional.logsigmoid(chosen - rejected).mean() + coefficient * torch.mean((chosen + rejected) ** 2)
    torch.testing.assert_close(output.losses.mean(), trl)
    torch.testing.assert_close(output.metrics["centring"], torch.tensor([9.0, 0.25, 1.0]))


def test_gradient_pushes_chosen_up_and_rejected_down_by_sigmoid_of_minus_the_gap():
    chosen, rejected = torch.tensor([1.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    BradleyTerry()(PairScores(chosen, rejected)).losses.sum().backward()
    gap = 1 / (1 + math.exp(1.0))  # σ(−1)
    assert chosen.grad.item() == pytest.approx(-gap) and rejected.grad.item() == pytest.approx(gap)


@pytest.mark.parametrize("bad", [-0.1, float("inf"), True, "0.1"])
def test_bad_centring_coefficient_is_refused(bad):
    with pytest.raises(ValueError, match="center_rewards_coefficient"):
        BradleyTerry(center_rewards_coefficient=bad)


def test_output_of_the_wrong_shape_names_the_loss():
    class Broken(RewardLoss):
        def forward(self, scores: PairScores) -> RewardLossOutput:
            return RewardLossOutput(losses=(scores.chosen - scores.rejected).mean())

    scores = PairScores(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"Broken returned `losses` of shape \(\) for a batch of 3 pairs"):
        check_reward_output(Broken(), Broken()(scores), 3)


def test_registry_finds_built_in_losses_through_the_entry_point_group():
    entry = registered_losses()["bradley_terry"]
    assert entry.loss_class is BradleyTerry and entry.distribution.startswith("lightpref ")
    with pytest.raises(RewardLossRegistryError, match="unknown reward loss 'bt'.*: bradley_terry"):
        build("bt")
