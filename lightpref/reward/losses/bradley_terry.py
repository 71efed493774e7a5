"""The Bradley–Terry reward-model loss, with an optional per-pair margin and reward centring."""

from __future__ import annotations

from torch.nn import functional

from lightpref.reward.losses.base import PairScores, RewardLoss, RewardLossOutput


class BradleyTerry(RewardLoss):
    """Bradley–Terry −logσ(r⁺ − r⁻ − m) + λ·(r⁺ + r⁻)², the pairwise reward-model loss.

    `Ouyang et al., 2022 <https://arxiv.org/abs/2203.02155>`_ (InstructGPT), eq. 1: the probability that the chosen
    completion y⁺ is preferred is σ(r(x, y⁺) − r(x, y⁻)), and the loss is its negative log-likelihood. A per-pair
    margin m (`Touvron et al., 2023 <https://arxiv.org/abs/2307.09288>`_, Llama 2, eq. 2) asks for a larger gap
    where annotators were more certain; it comes from the data and is 0 when the data gives none. The centring term
    λ·(r⁺ + r⁻)² (`Eisenstein et al., 2023 <https://arxiv.org/abs/2312.09244>`_) keeps scores near zero mean; per
    pair it is the term TRL's ``RewardTrainer`` adds as ``center_rewards_coefficient · mean((r⁺ + r⁻)²)``, so the
    batch means agree.

    Args:
        center_rewards_coefficient: λ ≥ 0 (0 disables the term; 0.01 is the value Eisenstein et al. use).
    """

    def __init__(self, center_rewards_coefficient: float = 0.0) -> None:
        super().__init__()
        value = center_rewards_coefficient
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(f"`center_rewards_coefficient` must be a finite number ≥ 0, got {value!r}; 0 disables "
                             "the centring term, 0.01 is the usual value")
        self.center_rewards_coefficient = float(value)

    def forward(self, scores: PairScores) -> RewardLossOutput:
        difference = scores.chosen - scores.rejected  # (B,)
        if scores.margin is not None:
            difference = difference - scores.margin
        losses = -functional.logsigmoid(difference)
        metrics = {}
        if self.center_rewards_coefficient:
            centring = (scores.chosen + scores.rejected) ** 2  # (B,)
            losses = losses + self.center_rewards_coefficient * centring
            metrics["centring"] = centring.detach()
        return RewardLossOutput(losses=losses, metrics=metrics)
