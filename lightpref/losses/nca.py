"""NCA (pair form): noise-contrastive alignment, which trains absolute log-ratios rather than their margin."""

from __future__ import annotations

import torch.nn.functional as F

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, log_ratios


class NCAPair(PreferenceLoss):
    """Noise Contrastive Alignment for pairs (TRL's ``nca_pair``).

    Chen, Deng, Su, Zhu, Zhu, 2024, https://arxiv.org/abs/2402.05369. With rewards ``r⁺ = β·ρc`` and ``r⁻ = β·ρr``::

        L = −logσ(r⁺) − ½·logσ(−r⁺) − ½·logσ(−r⁻)

    Each completion is scored on its own, not against the other: ``∂L/∂ρc = β·(½σ(r⁺) − σ(−r⁺))`` does not depend
    on y⁻, is negative (so training raises the chosen log-ratio) while ``r⁺ < log 2`` and vanishes at
    ``r⁺ = log 2``; ``∂L/∂ρr = ½β·σ(r⁻) > 0`` always lowers the rejected one. DPO, by contrast, can lower both
    likelihoods as long as the margin grows.

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
    """

    summary = "NCA pair −logσ(βρc) − ½logσ(−βρc) − ½logσ(−βρr): absolute, not relative, rewards"

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_beta(beta)
        self.beta = beta

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        chosen_rewards, rejected_rewards = self.beta * chosen_ratio, self.beta * rejected_ratio
        losses = (
            -F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards) - 0.5 * F.logsigmoid(-rejected_rewards)
        )
        return LossOutput(
            losses=losses, chosen_rewards=chosen_rewards.detach(), rejected_rewards=rejected_rewards.detach()
        )
